"""STS stand-in for tests and the demo: moto behind a fault-injecting proxy.

See :mod:`kiam.testing.sts.standin` for the behaviour and :mod:`kiam.testing.sts.faults`
for the faults; ``python -m kiam.testing.sts`` runs it as a process.
"""

from kiam.testing.sts.faults import FaultKind
from kiam.testing.sts.standin import AssumeRoleCall, StsStandIn, StsStandInError

__all__ = ["AssumeRoleCall", "FaultKind", "StsStandIn", "StsStandInError"]
