import pytest

from kiam.common.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("2m30s", 150.0),
        ("100us", 0.0001),
        ("-1s", -1.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "15", "m", "1x", "1m 2s", "abc", "-"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_round_trips_common_values() -> None:
    for text in ("15m", "1h", "500ms", "90s"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
