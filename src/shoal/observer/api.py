"""The JSON API: everything the page shows, under `/api`, plus the live event stream.

Every route only reads. `/api/events` is a server-sent event stream that sends the overview about
once a second, which is what keeps open pages current without reloading; each of its reads is a
few short statements, so an open page never holds a transaction. Parameters are bounded in
their declarations (ids fit a signed 64-bit integer, moments are finite and within the calendar,
text holds nothing a datastore cannot: see `params`), so bad input is a 422 the OpenAPI schema
describes, never a datastore error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from shoal.errors import ShoalError
from shoal.model import JobFilter, JobState
from shoal.observer import views
from shoal.observer.params import (
    DEFAULT_RANGE,
    MAX_EPOCH_S,
    MAX_ID,
    RANGES_S,
    StoredText,
    range_problem,
)
from shoal.observer.schedules import SchedulesView, read_schedules_view
from shoal.store.port import Store

EVENT_INTERVAL_S = 1.0

Preset = Literal["15m", "1h", "6h", "24h"]
Id = Annotated[int, Query(ge=1, le=MAX_ID)]
Moment = Annotated[
    float,
    Query(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False, description="epoch seconds"),
]
_overview_json = TypeAdapter(views.Overview)


class SharedOverview:
    """One overview read per interval, however many pages are open: the cost of watching the
    cluster does not grow with the number of watchers."""

    def __init__(self, store: Store, max_age_s: float = EVENT_INTERVAL_S * 0.9) -> None:
        self._store = store
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._read_at = -1e9
        self._json = ""

    def read_json(self) -> str:
        with self._lock:
            if time.monotonic() - self._read_at >= self._max_age_s:
                self._json = _overview_json.dump_json(views.read_overview(self._store)).decode()
                self._read_at = time.monotonic()
            return self._json


def api_router(store: Store, stopping: threading.Event) -> APIRouter:
    """The /api routes over `store`; event streams end soon after `stopping` is set."""
    router = APIRouter(prefix="/api", tags=["observer"])
    shared = SharedOverview(store)

    @router.get("/overview")
    def overview() -> views.Overview:
        """Nodes, job counts, running jobs, the last 15 minutes of throughput and recent events,
        task limits, and the tasks whose queued jobs wait for a node that registers them."""
        return views.read_overview(store)

    @router.get("/partitions")
    def partitions(
        at: Annotated[
            float | None,
            Query(
                ge=0,
                le=MAX_EPOCH_S,
                allow_inf_nan=False,
                description="a past moment, epoch seconds",
            ),
        ] = None,
    ) -> views.PartitionMap:
        """The owner of every partition now, or as it was at `at` (from history)."""
        return views.read_partition_map(store, at)

    @router.get("/timeline")
    def timeline(
        preset: Annotated[Preset | None, Query(alias="range", description="ending now")] = None,
        since: Moment | None = None,
        until: Moment | None = None,
    ) -> views.Timeline:
        """Each node's states over a time range, with rebalances, deaths and throughput.

        The range is `range` (default 15m) ending at `until` (default now), or `since` to
        `until`: since < until, at most 31 days apart, else 422.
        """
        start, end = resolve_range(store, preset, since, until)
        return views.read_timeline(store, start, end)

    @router.get("/jobs")
    def jobs(
        state: JobState | None = None,
        task: Annotated[StoredText | None, Query(description="exact task name")] = None,
        node: Id | None = None,
        min_id: Id | None = None,
        max_id: Id | None = None,
        before_id: Id | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> views.JobPage:
        """Jobs matching the filter, newest first; page on with `next_before_id`."""
        where = JobFilter(state=state, task=task, node_id=node, min_id=min_id, max_id=max_id)
        return views.read_jobs(store, where, limit=limit, before_id=before_id)

    @router.get("/jobs/{job_id}", responses={404: {"description": "no such job"}})
    def job(job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> views.JobDetail:
        """One job; `waiting_for` says what a queued job waits for, if anything."""
        detail = views.read_job_detail(store, job_id)
        if detail is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return detail

    @router.get("/schedules")
    def schedules() -> SchedulesView:
        """Every periodic schedule: task, timing, zone, last firing and its job, next tick."""
        return read_schedules_view(store)

    @router.get("/events", response_class=StreamingResponse)
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: an `overview` event (the /api/overview body) about every second."""
        return StreamingResponse(
            overview_stream(shared, request, stopping),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return router


def resolve_range(
    store: Store, name: str | None, since: float | None, until: float | None
) -> tuple[float, float]:
    """A preset range ending now, or an explicit one.

    Raises RequestValidationError (a 422 shaped like every other bad parameter's, as the schema
    documents) for an unknown preset or an explicit range that is empty or longer than 31 days.
    """
    now = store.now()
    end = now if until is None else until
    if since is None:
        span = RANGES_S.get(name or DEFAULT_RANGE)
        if span is None:
            raise _bad_query("range", f"range must be one of {list(RANGES_S)}", name)
        return end - span, end
    problem = range_problem(since, end)
    if problem is not None:
        raise _bad_query("since", problem, since)
    return since, end


def _bad_query(name: str, message: str, given: object) -> RequestValidationError:
    error = {"type": "value_error", "loc": ("query", name), "msg": message, "input": given}
    return RequestValidationError([error])


async def overview_stream(
    shared: SharedOverview, request: Request, stopping: threading.Event
) -> AsyncIterator[str]:
    """Until the client leaves or the server stops (so that Ctrl-C never waits on a browser)."""
    yield "retry: 2000\n\n"
    while not stopping.is_set() and not await request.is_disconnected():
        try:
            data = await run_in_threadpool(shared.read_json)
            yield f"event: overview\ndata: {data}\n\n"
        except ShoalError as exc:
            # The datastore may be failing over: tell the page, keep the stream, try again.
            yield f"event: trouble\ndata: {_one_line(str(exc))}\n\n"
        await asyncio.sleep(EVENT_INTERVAL_S)


def _one_line(text: str) -> str:
    return " ".join(text.split())
