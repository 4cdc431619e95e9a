"""``init`` and friends: naming the process, switching peeps on or off, and
connecting to the dashboard."""

from __future__ import annotations

import logging
import os

from . import _collector, _redact
from ._config import ENV_AUTO, ENV_DASHBOARD, ENV_MAX_FRAME_BYTES, ENV_TOKEN, STATE, env_flag
from ._threads import SamplerMode
from .types import DEFAULT_MAX_FRAME_BYTES

log = logging.getLogger("peeps")


def init(
    name: str | None = None,
    *,
    dashboard: str | None = None,
    enabled: bool | None = None,
    redact: list[str] | tuple[str, ...] | None = None,
    auto: bool | None = None,
    sampler: SamplerMode | None = None,
    sampler_hz: float | None = None,
    watchdog: bool | None = None,
    stall_threshold_ms: float | None = None,
) -> None:
    """Name this process and, if a dashboard is configured, connect to it.

    :param name: the process name shown in the dashboard (``proc_key`` is
        ``{name}-{pid}``).  Defaults to ``PEEPS_PROCESS_NAME`` or the script name.
    :param dashboard: ``host:port`` of ``peeps-web``'s ingest port.  Defaults to
        ``PEEPS_DASHBOARD``; when neither is set, nothing is sent anywhere and the
        wrappers still work.
    :param enabled: ``False`` turns peeps off: wrappers created afterwards are
        plain standard primitives.  Defaults to on unless ``PEEPS_DISABLE=1``.
    :param auto: ``True`` tracks every asyncio task (a chaining task factory on
        the running loop and on loops created later; see docs/asyncio.md).
        Defaults to ``PEEPS_AUTO``; ``PEEPS_STEP_STATS=1`` adds per-step stats.
    :param redact: regexes (case-insensitive, matched anywhere in an attribute
        key) whose values are replaced by ``[redacted]`` before anything leaves
        the process.  Defaults to ``peeps.DEFAULT_REDACT_PATTERNS`` plus
        ``PEEPS_REDACT``; pass ``()`` to turn redaction off.

    :param sampler: thread sampling (verdicts ``blocked``/``spinning``/...):
        ``"thread"`` (a sampler thread), ``"sigprof"`` (a SIGPROF timer; sees
        little while the main thread blocks) or ``"off"``.  Defaults to
        ``PEEPS_SAMPLER``, else ``"thread"``; see docs/threads.md.
    :param sampler_hz: samples per second (``PEEPS_SAMPLER_HZ``, default 50).
    :param watchdog: ``True`` watches the running loop and loops started later
        for stalls (``loop.stall`` events).  Defaults to on when
        ``PEEPS_WATCHDOG_MS`` is a positive threshold, else off.
    :param stall_threshold_ms: the stall threshold (``PEEPS_WATCHDOG_MS``,
        default 100); giving it turns the watchdog on unless ``watchdog=False``.

    Never raises for a dashboard problem: an unreachable dashboard is retried in
    the background.  A malformed ``dashboard`` address raises ``ValueError``.
    """
    if enabled is not None:
        STATE.enabled = enabled
    if redact is not None:
        _redact.set_patterns(tuple(redact))
    if name:
        STATE.process_name = name
    STATE.pid = os.getpid()
    STATE.initialized = True
    if STATE.enabled and (auto if auto is not None else env_flag(ENV_AUTO)):
        from ._autotrack import enable_auto

        enable_auto(step_stats=env_flag("PEEPS_STEP_STATS"))
    if STATE.enabled:
        from ._threads import start_threads

        start_threads(sampler=sampler, sampler_hz=sampler_hz, watchdog=watchdog,
                      stall_threshold_ms=stall_threshold_ms)
    address = dashboard if dashboard is not None else os.environ.get(ENV_DASHBOARD, "")
    if not STATE.enabled or not address.strip():
        return
    raw = os.environ.get(ENV_MAX_FRAME_BYTES) or ""
    try:
        max_frame = int(raw) if raw.strip() else DEFAULT_MAX_FRAME_BYTES
    except ValueError:  # a bad setting must not stop the host from starting
        log.warning("peeps: %s=%r is not a number of bytes; using %d",
                    ENV_MAX_FRAME_BYTES, raw, DEFAULT_MAX_FRAME_BYTES)
        max_frame = DEFAULT_MAX_FRAME_BYTES
    _collector.start_collector(address, token=os.environ.get(ENV_TOKEN) or None,
                               max_frame_bytes=max_frame)


def init_named(name: str, *, dashboard: str | None = None, enabled: bool | None = None,
               auto: bool | None = None) -> None:
    """Like :func:`init` with a required process name."""
    if not name:
        raise ValueError("init_named needs a non-empty process name")
    init(name, dashboard=dashboard, enabled=enabled, auto=auto)


def shutdown() -> None:
    """Disconnect from the dashboard and stop the collector, sampler and watchdog
    threads (joined; a SIGPROF timer is cleared)."""
    _collector.stop_collector()
    from ._threads import stop_threads

    stop_threads()


def is_enabled() -> bool:
    """Whether wrappers created now are instrumented."""
    return STATE.enabled
