import resource
import subprocess
import sys


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    # in a child, so this test process keeps its own limits: start it at a low soft limit
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "from kiam.common.limits import raise_open_file_limit\n"
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    returned, soft, hard = (int(x) for x in out)
    expected = hard if hard != resource.RLIM_INFINITY else min(256, hard)
    assert returned == soft
    if hard != resource.RLIM_INFINITY:
        assert soft == expected
