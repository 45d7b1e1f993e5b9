"""How the observer writes sections, durations, moments and data for people, in the page and the
terminal.

Sections are shown as compact ranges ("0-41, 96-99") because a list of 40 partition numbers says
less than its shape; ages are rounded to the unit a person reads at a glance; moments are calendar
times, or words for those no calendar date can show. Text from the datastore reaches a terminal
only through `printable`, which escapes control characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo

from shoal.assignment import format_section


def compact_ranges(section: Iterable[int]) -> str:
    """`[0, 1, 2, 5, 7, 8]` -> `"0-2, 5, 7-8"`; an empty section gives `""`."""
    return format_section(section, sep=", ", empty="")


def brief_ranges(section: Iterable[int], most_chars: int = 40) -> str:
    """`compact_ranges`, cut at a separator to at most `most_chars`, with "…" when cut (just "…"
    when not even the first range fits).

    Sections are spread over the partition space, so a whole one reads as a long list; a
    terminal row shows its start and the count beside it (the partition map shows it all).
    """
    text = compact_ranges(section)
    if len(text) <= most_chars:
        return text
    cut = text.rfind(", ", 0, most_chars - 1)  # what is kept, then ", …", fits in most_chars
    return text[:cut] + ", …" if cut > 0 else "…"


def format_age(seconds: float) -> str:
    """A duration as `0.4s`, `12s`, `3m05s`, `2h10m` or `3d4h`; negative clock skew shows as 0s."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def format_moment(at: float | None, zone: tzinfo = UTC) -> str:
    """`at` (epoch seconds) as `2025-01-31 14:05:09 UTC`, in `zone`; `—` for None.

    Never raises: a moment that no calendar date can show reads `beyond year 9999` (or `before
    year 1`, `not a time` for NaN). A job's `run_after` is its submit time plus its delay, so a
    stored row can hold any such value, and one row must not break the page that lists it.
    """
    if at is None:
        return "—"
    try:
        return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    except (ValueError, OverflowError, OSError):
        # Past year 9999 (ValueError), past the platform's time_t (OverflowError, or OSError
        # EOVERFLOW), or pushed over the calendar's edge by the zone's offset (OverflowError).
        if math.isnan(at):
            return "not a time"
        return "beyond year 9999" if at > 0 else "before year 1"


# C0 controls and DEL, C1 controls (CSI is U+009B), lone surrogates (what non-UTF-8 bytes decode
# to, and unprintable), and the bidirectional overrides that make text read in another order than
# it runs. Any of these from data could move the cursor, retitle the window or hide text.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_BLOCK = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]"
)


def printable(text: str, *, multiline: bool = False) -> str:
    """`text` safe to write to a terminal: every control character shown as its escape.

    ESC becomes `\\x1b`, a carriage return `\\x0d`, a lone surrogate `\\udcff`, so a name or message
    from the datastore can neither send terminal control sequences nor overwrite what precedes it.
    With `multiline` (tracebacks), newlines and tabs are kept as they are. Printable text, including
    backslashes and rich markup such as `[bold]`, is returned unchanged: markup is a matter of
    passing the result to rich as `Text`.
    """
    pattern = _UNSAFE_IN_BLOCK if multiline else _UNSAFE
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
