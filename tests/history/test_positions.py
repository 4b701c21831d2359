"""Positions and ``since`` forms (pure parsing)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from livenotify.history import ALL, InvalidPosition, Position, Since, parse_position, parse_since

NOW = 1_700_000_000.0


def test_position_text_round_trips() -> None:
    pos = parse_position("ab12cd34:42")
    assert pos == Position("ab12cd34", 42)
    assert str(pos) == "ab12cd34:42"
    assert parse_position({"epoch": "ab12cd34", "offset": 0}) == Position("ab12cd34", 0)


def test_since_forms() -> None:
    assert parse_since("all", NOW) == ALL and ALL.is_all
    assert parse_since("10m", NOW) == Since(time=NOW - 600)
    assert parse_since("2h", NOW) == Since(time=NOW - 7200)
    assert parse_since("1h30m", NOW) == Since(time=NOW - 5400)
    assert parse_since("1d", NOW) == Since(time=NOW - 86400)
    stamp = "2024-01-15T14:30:00Z"
    expected = datetime(2024, 1, 15, 14, 30, tzinfo=UTC).timestamp()
    assert parse_since(stamp, NOW) == Since(time=expected)
    assert parse_since("2024-01-15T16:30:00.500+02:00", NOW) == Since(time=expected + 0.5)
    assert parse_since("e1:7", NOW) == Since(position=Position("e1", 7))
    assert parse_since({"epoch": "e1", "offset": 7}, NOW) == Since(position=Position("e1", 7))


@pytest.mark.parametrize(
    "bad",
    [
        "", ":", "e1:", ":5", "e1:-1", "e1:1.5", "e1:5:6", "e 1:5", "e1:99999999999999999999",
        "10", "10x", "m", "-10m", "2024-01-15T14:30:00", "2024-01-15", "2024-13-45T00:00:00Z",
        "x" * 65, "ALL", 5, None, [], {"epoch": "e1"}, {"epoch": "e1", "offset": -1},
        {"epoch": "e1", "offset": True}, {"epoch": 1, "offset": 1},
        {"epoch": "e1", "offset": 1, "x": 2},
    ],
)  # fmt: skip
def test_bad_since_is_invalid_position(bad: object) -> None:
    with pytest.raises(InvalidPosition) as info:
        parse_since(bad, NOW)
    assert isinstance(info.value, ValueError)
    assert info.value.code == "invalid_position"
