"""Refusal runs and bounded error texts (livenotify.replies), in-process."""

from __future__ import annotations

import json

from livenotify import protocol
from livenotify.protocol import ProtocolError
from livenotify.replies import RefusalRun, unknown_events


def bad(code: str = protocol.UNKNOWN_COMMAND) -> ProtocolError:
    return ProtocolError(code, "no")


def test_first_refusal_answered_at_once_then_counted() -> None:
    run = RefusalRun()
    first = run.refuse(bad())
    assert [json.loads(t) for t in first] == [{"type": "error", "code": "unknown_command",
                                              "message": "no"}]  # fmt: skip
    assert run.refuse(bad()) == [] and run.refuse(bad()) == []
    summary = run.summary()
    assert summary is not None
    assert json.loads(summary)["count"] == 2
    assert run.summary() is None  # counted once
    assert run.refuse(bad()) == []  # the run is still open
    assert run.end() is not None and run.end() is None


def test_another_code_flushes_the_run_first() -> None:
    run = RefusalRun()
    run.refuse(bad())
    run.refuse(bad())
    texts = [json.loads(t) for t in run.refuse(bad(protocol.INVALID_JSON))]
    assert [(t["code"], t.get("count", 1)) for t in texts] == [
        ("unknown_command", 1),
        ("invalid_json", 1),
    ]


def test_unknown_events_names_five_and_counts_the_rest() -> None:
    names = [f"n{i}" for i in range(100)]
    catalog = [f"c{i}" for i in range(50)]
    exc = unknown_events(names, catalog)
    assert exc.code == protocol.UNKNOWN_EVENT
    assert exc.message == (
        "unknown events: n0, n1, n2, n3, n4 and 95 more; available: "
        + ", ".join(catalog[:20])
        + " and 30 more"
    )
