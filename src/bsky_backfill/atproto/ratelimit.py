"""Rate-limit headers of an XRPC answer, parsed into one value that never fails to build.

A PDS sends ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (absolute
unix seconds on the reference PDS) and ``RateLimit-Policy: "<limit>;w=<seconds>"`` on
every answer, and ``Retry-After`` on some 429s. Hosts are not trusted: malformed, huge
or missing values become None.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Final

__all__ = ["RateLimitInfo"]

# A reset below this is a delta, not a moment: no absolute reset can fall before 2001.
# The reference PDS sends absolute epoch seconds; the IETF draft (and some hosts) a delta.
_ABSOLUTE_AFTER: Final = 1_000_000_000

# ASCII digits only, and few of them: int() would accept other scripts' digits, and
# millions of digits make int() itself raise.
_INTEGER: Final = re.compile(r"\s*(\d{1,15})\s*", re.ASCII)
_SECONDS: Final = re.compile(r"\s*(\d{1,15}(?:\.\d{1,9})?)\s*", re.ASCII)
_POLICY_ITEM: Final = re.compile(r'\s*"?\s*(\d{1,15})\s*((?:;[^,;"]*)*)"?\s*(?:,|$)', re.ASCII)
_WINDOW: Final = re.compile(r"\s*w\s*=\s*(\d{1,15})\s*", re.ASCII)


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a response's rate-limit headers said; a field is None when absent or malformed.

    ``reset_at`` is absolute unix seconds (a ``RateLimit-Reset`` below 1e9 is read as a
    delta from ``now``).
    ``policy_limit`` / ``policy_window`` come from ``RateLimit-Policy: "<limit>;w=<seconds>"``.
    ``retry_after`` is seconds from the moment the response arrived (``Retry-After`` as
    seconds or an HTTP-date).
    """

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    policy_limit: int | None = None
    policy_window: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], *, now: float) -> RateLimitInfo:
        """Parse the headers of one response (``now``: unix seconds). Never raises."""
        policy_limit, policy_window = _parse_policy(headers.get("RateLimit-Policy"))
        return cls(
            limit=_parse_integer(headers.get("RateLimit-Limit")),
            remaining=_parse_integer(headers.get("RateLimit-Remaining")),
            reset_at=_parse_reset(headers.get("RateLimit-Reset"), now),
            policy_limit=policy_limit,
            policy_window=policy_window,
            retry_after=_parse_retry_after(headers.get("Retry-After"), now),
        )

    def retry_delay(self, now: float) -> float | None:
        """Seconds to wait: ``Retry-After`` if given, else until ``reset_at``, else None."""
        if self.retry_after is not None:
            return self.retry_after
        if self.reset_at is not None:
            return max(0.0, self.reset_at - now)
        return None


def _parse_integer(value: str | None) -> int | None:
    match = _INTEGER.fullmatch(value) if value is not None else None
    return int(match[1]) if match else None


def _parse_seconds(value: str | None) -> float | None:
    match = _SECONDS.fullmatch(value) if value is not None else None
    return float(match[1]) if match else None


def _parse_reset(value: str | None, now: float) -> float | None:
    seconds = _parse_seconds(value)
    if seconds is None or seconds >= _ABSOLUTE_AFTER:
        return seconds
    return now + seconds


def _parse_policy(value: str | None) -> tuple[int | None, float | None]:
    """The first item of ``RateLimit-Policy``: the one that matches ``RateLimit-Limit``."""
    match = _POLICY_ITEM.match(value) if value is not None else None
    if match is None:
        return None, None
    windows = (_WINDOW.fullmatch(param) for param in match[2].split(";"))
    window = next((float(w[1]) for w in windows if w), None)
    return int(match[1]), window


def _parse_retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    seconds = _parse_seconds(value)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
        if moment.tzinfo is None:  # "-0000": RFC 5322 for "UTC, origin unknown"
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
