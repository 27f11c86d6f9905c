"""Environment switches that turn off a process-wide behaviour of the provider (for diagnosis, or a
deployment that would rather not have it). One spelling of "off" everywhere: ``off``, ``0``,
``false``, ``no`` (any case)."""

from __future__ import annotations

import os

GC_FREEZE_ENV = "FLEX_PROVIDER_GC_FREEZE"  # gc.freeze() of long-lived objects (triggerer and run_job)
ENGINE_THREAD_ENV = "FLEX_PROVIDER_ENGINE_THREAD"  # flex runs on a loop of their own in the triggerer

_OFF = frozenset({"off", "0", "false", "no"})


def switched_on(name: str) -> bool:
    """Whether the switch ``name`` is on: it is unless the environment says one of the "off" words."""
    return os.environ.get(name, "on").strip().lower() not in _OFF
