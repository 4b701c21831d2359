"""The package face stays light: importing the producer API (what a Django
app does) or the storage writer's entry point loads the standard library and
livenotify's own pure modules only — never Trio, trio-websocket, Celery,
storage or mail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What the child prints: the modules its import added, as JSON.
_PROBE = """
import json, sys
before = set(sys.modules)
{statement}
print(json.dumps(sorted(set(sys.modules) - before)))
"""

_HEAVY = ("trio", "trio_websocket", "wsproto", "celery", "kombu", "redis", "psycopg")
_HEAVY_OWN = ("livenotify.server", "livenotify.storage", "livenotify.mail", "livenotify.hub")


def _imported_by(statement: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(out.stdout)
    assert isinstance(loaded, list)
    return loaded


def _not_stdlib(modules: list[str]) -> list[str]:
    own = ("livenotify", "storage_proc")
    return [
        m
        for m in modules
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in own
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "from livenotify import Publisher",
        "from livenotify import PublishError, Config, Limits, SlowPolicy",
        "import livenotify.publisher",
    ],
)
def test_publisher_import_loads_the_standard_library_only(statement: str) -> None:
    loaded = _imported_by(statement)
    assert "livenotify" in loaded  # the probe really imported something
    for name in _HEAVY:
        assert name not in loaded, f"{statement!r} imported {name}"
    for name in _HEAVY_OWN:
        assert not any(m == name or m.startswith(name + ".") for m in loaded), name
    assert _not_stdlib(loaded) == []


def test_storage_writer_entry_point_loads_no_trio() -> None:
    # The spawned writer process unpickles storage_proc.writer.writer_main;
    # importing it must not drag the server in through livenotify/__init__.
    loaded = _imported_by("from storage_proc.writer import writer_main")
    assert "storage_proc.writer" in loaded
    assert "trio" not in loaded and "livenotify.server" not in loaded
    assert _not_stdlib(loaded) == []


def test_serve_is_still_reachable_from_the_face() -> None:
    loaded = _imported_by("from livenotify import serve; assert callable(serve)")
    assert "livenotify.server" in loaded and "trio" in loaded


def test_unknown_names_raise_attribute_error() -> None:
    import livenotify

    with pytest.raises(AttributeError):
        livenotify.no_such_name  # noqa: B018
    assert "Publisher" in dir(livenotify)
