"""Redaction: attribute values whose key matches a pattern never leave the process.

Applied to every node, edge and event attribute (nested dicts included) when a
snapshot is assembled.  Decisions are cached per key, so the cost is one dict
lookup per attribute.
"""

from __future__ import annotations

import os
import re
from typing import Any

#: Matched case-insensitively anywhere in the key (``X-Auth-Token`` matches ``token``).
DEFAULT_PATTERNS: tuple[str, ...] = ("authorization", "password", "passwd", "token",
                                     "secret", "cookie", "api_key", "apikey")
REDACTED = "[redacted]"
#: Dicts nested deeper than this in an attribute value are replaced by
#: TOO_DEEP: a dict that contains itself must not recurse without end.
MAX_DEPTH = 10
TOO_DEEP = "[nested too deep]"
ENV_REDACT = "PEEPS_REDACT"


class Redactor:
    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(patterns)
        self._regex = (re.compile("|".join(f"(?:{p})" for p in self.patterns), re.IGNORECASE)
                       if self.patterns else None)
        self._cache: dict[str, bool] = {}

    def _hit(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            hit = bool(self._regex and self._regex.search(key))
            if len(self._cache) < 10_000:
                self._cache[key] = hit
        return hit

    def scrub(self, attrs: dict[str, Any], _depth: int = 0) -> dict[str, Any]:
        """Return ``attrs`` with matching values replaced (a copy only if needed)."""
        if self._regex is None:
            return attrs
        cache = self._cache  # the cached decision inline: this runs for every attribute
        out: dict[str, Any] | None = None
        for key, value in attrs.items():
            hit = cache.get(key)
            if hit is None:
                hit = self._hit(str(key))
            if hit:
                new: Any = REDACTED
            elif isinstance(value, dict):
                new = self.scrub(value, _depth + 1) if _depth < MAX_DEPTH else TOO_DEEP
                if new is value:
                    continue
            else:
                continue
            if out is None:
                out = dict(attrs)
            out[key] = new
        return out if out is not None else attrs


def patterns_from_env() -> tuple[str, ...]:
    """``PEEPS_REDACT``: comma-separated regexes added to the defaults; ``none``
    disables redaction entirely."""
    raw = os.environ.get(ENV_REDACT, "").strip()
    if raw.lower() == "none":
        return ()
    extra = tuple(p.strip() for p in raw.split(",") if p.strip())
    return DEFAULT_PATTERNS + extra


REDACTOR = Redactor(patterns_from_env())


def set_patterns(patterns: tuple[str, ...] | list[str]) -> None:
    global REDACTOR
    REDACTOR = Redactor(patterns)
