"""What the observer accepts in a request's query, for the API and the pages alike.

The API declares these rules on its parameters, so bad input is a 422 that its OpenAPI schema
describes; the pages apply the same rules to the raw query and keep working without the bad
field, with a notice that says which it was (`Complaint`). Either way nothing reaches the
datastore that it cannot hold, text with a NUL character (PostgreSQL's text cannot contain one)
or a lone surrogate (not UTF-8), and no moment is asked for that no page could print.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_ID = 2**63 - 1  # both datastores keep ids (jobs and nodes) in signed 64-bit integers
MAX_EPOCH_S = 253402300799.0  # 9999-12-31 23:59:59 UTC, the last moment a page can print
RANGES_S = {"15m": 15 * 60.0, "1h": 3600.0, "6h": 6 * 3600.0, "24h": 24 * 3600.0}
DEFAULT_RANGE = "15m"
MAX_RANGE_S = 31 * 24 * 3600.0
RANGE_RULE = "need since < until, at most 31 days apart"
MOMENT_RULE = f"must be a time in epoch seconds from 0 to {MAX_EPOCH_S:.0f}"

# The API's moment parameters (api.Moment) with the same bounds: a page accepts what they accept.
_moment = TypeAdapter(Annotated[float, Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False)])


def text_problem(text: str) -> str | None:
    """Why no datastore could compare `text` with what it holds, or None if it can."""
    if "\x00" in text:
        return "must not contain NUL (\\x00) characters"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "must be valid UTF-8 text (no lone surrogates)"
    return None


def _storable(text: str) -> str:
    problem = text_problem(text)
    if problem is not None:
        raise PydanticCustomError("unstorable_text", "text " + problem)
    return text


# A text parameter that is compared with stored text: refused (422) unless a datastore can hold it.
# The schema states the NUL rule; a lone surrogate cannot arrive in a URL's UTF-8 anyway.
StoredText = Annotated[
    str,
    AfterValidator(_storable),
    WithJsonSchema({"type": "string", "pattern": "^[^\\u0000]*$"}),
]


def range_problem(since: float, until: float) -> str | None:
    """Why `since`..`until` is no range to draw, or None: it must be forwards, at most 31 days."""
    if until <= since or until - since > MAX_RANGE_S:
        return RANGE_RULE
    return None


def parse_moment(text: str) -> float | None:
    """`text` as a moment the API accepts (finite epoch seconds within the calendar), else None."""
    try:
        return _moment.validate_python(text)
    except ValidationError:
        return None


@dataclass(frozen=True)
class Complaint:
    """Query parameters a page goes on without (its script drops them too), and why."""

    dropped: tuple[str, ...]
    notice: str


def partitions_complaints(query: Mapping[str, str]) -> list[Complaint]:
    """What is wrong with `/partitions?at=T`: a moment the API would refuse."""
    if "at" in query and parse_moment(query["at"]) is None:
        return [Complaint(("at",), f"at {MOMENT_RULE}; showing the map as it is now")]
    return []


def timeline_complaints(query: Mapping[str, str], now: Callable[[], float]) -> list[Complaint]:
    """What is wrong with `/timeline?range=R` or `?since=T&until=T`, and `&at=T` (the picked
    moment), by the rules of `/api/timeline` and `/api/partitions`.

    An empty `range`, `since` or `until` counts as absent, as the page's script reads them. `now`
    is read only for a `since` without a good `until`, which then means now.
    """
    complaints = [
        Complaint((name,), f"{name} {MOMENT_RULE}")
        for name in ("since", "until")
        if query.get(name) and parse_moment(query[name]) is None
    ]
    since = parse_moment(query.get("since") or "")
    if since is not None:
        until = parse_moment(query.get("until") or "")
        if range_problem(since, now() if until is None else until):
            complaints.append(Complaint(("since", "until"), RANGE_RULE))
            since = None
    preset = query.get("range") or DEFAULT_RANGE
    if preset not in RANGES_S:
        complaints.append(Complaint(("range",), f"range must be one of {', '.join(RANGES_S)}"))
        preset = DEFAULT_RANGE
    if complaints and since is None:
        last = complaints.pop()
        complaints.append(Complaint(last.dropped, f"{last.notice}; showing the last {preset}"))
    if "at" in query and parse_moment(query["at"]) is None:
        complaints.append(Complaint(("at",), f"at {MOMENT_RULE}; no moment is shown"))
    return complaints
