"""Hypothesis profiles: how hard the fuzz suites try, per environment.

``HYPOTHESIS_PROFILE`` picks one (default ``ci``); the ``fuzz`` tox
environment sets ``long``. Property tests use the profile's settings as they
are; the stateful machine, whose every step is a network round trip against a
live server, gets its own smaller budget from :data:`STATEFUL`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: The profile in force for this run.
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

# deadline=None everywhere: the machine is a shared 2-core box, and a
# per-example deadline there measures the neighbours, not the code.
_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Examples per property test. ``ci`` keeps the pure-protocol suite to a few
#: seconds; ``long`` is for the nightly/manual ``tox -e fuzz`` run.
PROPERTY_EXAMPLES = {"dev": 25, "ci": 300, "long": 5000}

#: (examples, steps per example) for the live-server state machine. ``ci`` is
#: sized to keep the whole fuzz/ directory around a minute on two cores.
STATEFUL = {"dev": (3, 10), "ci": (100, 50), "long": (600, 80)}


def register() -> None:
    """Register every profile and load the one named by HYPOTHESIS_PROFILE."""
    for name, examples in PROPERTY_EXAMPLES.items():
        settings.register_profile(name, max_examples=examples, **_COMMON)  # type: ignore[arg-type]
    if PROFILE not in PROPERTY_EXAMPLES:
        raise RuntimeError(
            f"unknown HYPOTHESIS_PROFILE {PROFILE!r}; use one of {', '.join(PROPERTY_EXAMPLES)}"
        )
    settings.load_profile(PROFILE)


def stateful_settings() -> settings:
    """Settings for the live-server machine under the current profile."""
    examples, steps = STATEFUL[PROFILE]
    return settings(settings.default, max_examples=examples, stateful_step_count=steps)
