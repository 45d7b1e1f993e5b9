"""How the observer writes sections and durations for people, the same in the page and the terminal.

Sections are shown as compact ranges ("0-41, 96-99") because a list of 40 partition numbers says
less than its shape; ages are rounded to the unit a person reads at a glance.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.assignment import format_section


def compact_ranges(section: Iterable[int]) -> str:
    """`[0, 1, 2, 5, 7, 8]` -> `"0-2, 5, 7-8"`; an empty section gives `""`."""
    return format_section(section, sep=", ", empty="")


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
