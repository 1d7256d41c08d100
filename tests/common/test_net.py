import pytest

from kiam.common.net import join_host_port, normalise_ip, split_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [("localhost:9610", ("localhost", 9610)), ("[::1]:9610", ("::1", 9610)),
     (":9620", ("", 9620)), ("10.0.0.1", ("10.0.0.1", 7)), ("::1", ("::1", 7))],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default_port=7) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:99999", "[::1", "[::1]x", "a:b:c"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


def test_join_brackets_ipv6() -> None:
    assert join_host_port("::1", 80) == "[::1]:80"
    assert join_host_port("10.0.0.1", 80) == "10.0.0.1:80"


def test_normalise_ip() -> None:
    assert normalise_ip("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalise_ip("fe80::1%eth0") == "fe80::1"
    assert normalise_ip("2001:DB8::1") == "2001:db8::1"
    with pytest.raises(ValueError):
        normalise_ip("not-an-ip")
