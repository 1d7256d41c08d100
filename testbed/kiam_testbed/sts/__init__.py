"""STS stand-in for tests and the demo: moto behind a fault-injecting proxy.

See :mod:`kiam_testbed.sts.standin` for the behaviour and :mod:`kiam_testbed.sts.faults`
for the faults; :mod:`kiam_testbed.standins` runs it as a process.
"""

from kiam_testbed.sts.faults import FaultKind
from kiam_testbed.sts.standin import AssumeRoleCall, StsStandIn, StsStandInError

__all__ = ["AssumeRoleCall", "FaultKind", "StsStandIn", "StsStandInError"]
