"""The HTML pages: `/`, `/partitions`, `/nodes`, `/timeline`, `/jobs`, `/jobs/{id}`,
`/schedules`, `/login` and `/logout`.

The live pages (overview, partitions, nodes, timeline) are shells that the static scripts fill
from the JSON API and the event stream, building the DOM with `textContent` only; a shell checks
its query by the API's rules first and says which parameter it goes on without. The job list,
the job page and the schedules are rendered here with Jinja's autoescaping, so they read without
JavaScript and any HTML in a job's arguments or error, or in a schedule's name, shows as text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shoal.model import JobFilter, JobState
from shoal.observer import views
from shoal.observer.format import format_age, format_moment
from shoal.observer.params import (
    MAX_ID,
    Complaint,
    partitions_complaints,
    text_problem,
    timeline_complaints,
)
from shoal.observer.schedules import local_time, read_schedules_view
from shoal.observer.security import (
    Sessions,
    clear_session_cookie,
    is_token_valid,
    safe_next,
    session_cookie,
    set_session_cookie,
)
from shoal.store.port import Store

TEMPLATES = Path(__file__).parent / "templates"
LIVE_PAGES = {
    "/": ("overview", "Overview"),
    "/partitions": ("partitions", "Partition map"),
    "/nodes": ("nodes", "Nodes"),
    "/timeline": ("timeline", "Timeline"),
}


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["ts"] = format_moment
    env.filters["age"] = format_age
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    return env


def page_router(store: Store, token: str | None, sessions: Sessions) -> APIRouter:
    env = make_environment()
    router = APIRouter(include_in_schema=False)

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("datastore", store.url_for_display)
        context.setdefault("has_token", token is not None)
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def live_page(path: str) -> None:
        page, title = LIVE_PAGES[path]

        def handler(request: Request) -> HTMLResponse:
            complaints = live_page_complaints(path, request.query_params, store)
            return render(
                f"{page}.html",
                page=page,
                title=title,
                notice="; ".join(c.notice for c in complaints) or None,
                rejected=sorted({name for c in complaints for name in c.dropped}),
            )

        router.add_api_route(path, handler, methods=["GET"], response_class=HTMLResponse)

    for path in LIVE_PAGES:
        live_page(path)

    @router.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> HTMLResponse:
        form, where, error = parse_job_filter(dict(request.query_params))
        before = _int(request.query_params.get("before_id"))
        page = views.read_jobs(store, where, limit=50, before_id=before)
        older = None
        if page.next_before_id is not None:
            older = "/jobs?" + urlencode({**form, "before_id": page.next_before_id})
        return render(
            "jobs.html",
            page="jobs",
            title="Jobs",
            form=form,
            error=error,
            jobs=page.jobs,
            older=older,
            first_page=before is None,
            states=[s.value for s in JobState],
        )

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(job_id: Annotated[int, PathParam(ge=1, le=MAX_ID)]) -> HTMLResponse:
        detail = views.read_job_detail(store, job_id)
        if detail is None:
            return render("missing.html", status=404, page="jobs", title="No such job", id=job_id)
        return render("job.html", page="job", title=f"Job {job_id}", job=detail)

    @router.get("/schedules", response_class=HTMLResponse)
    def schedules() -> HTMLResponse:
        view = read_schedules_view(store)
        return render(
            "schedules.html",
            page="schedules",
            title="Schedules",
            schedules=view.schedules,
            local_time=local_time,
        )

    @router.get("/login", response_class=HTMLResponse)
    def login_form(target: Annotated[str, Query(alias="next")] = "/") -> HTMLResponse:
        return render("login.html", page="login", title="Sign in", next=safe_next(target))

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = fields.get("token", [""])[0]
        target = safe_next(fields.get("next", ["/"])[0])
        if token is None or not is_token_valid(token, given):
            return render(
                "login.html", status=401, page="login", title="Sign in", next=target, failed=True
            )
        response = RedirectResponse(target, status_code=303)
        secure = request.url.scheme == "https"
        set_session_cookie(response, sessions.start(), sessions.lifetime_s, secure)
        return response

    @router.post("/logout")
    def logout(request: Request) -> Response:
        """Ends this browser's session, if it has one, and goes to the login form."""
        session_id = session_cookie(request.headers)
        if session_id is not None:
            sessions.end(session_id)
        response = RedirectResponse("/login" if token else "/", status_code=303)
        clear_session_cookie(response, secure=request.url.scheme == "https")
        return response

    return router


def live_page_complaints(path: str, query: Mapping[str, str], store: Store) -> list[Complaint]:
    """A live page's bad parameters. The page is drawn by its script from the API, which would
    refuse them: the page names them in `data-rejected`, and the script goes on without them."""
    if path == "/partitions":
        return partitions_complaints(query)
    if path == "/timeline":
        return timeline_complaints(query, store.now)
    return []


def parse_job_filter(query: dict[str, str]) -> tuple[dict[str, str], JobFilter, str | None]:
    """The job list's filter form: the values to show again, the filter, and any complaint.

    Unlike the API (which answers 422), a page keeps working with a bad field and says which, as
    the live pages do (`live_page_complaints`).
    """
    form = {k: query.get(k, "").strip() for k in ("state", "task", "node", "min_id", "max_id")}
    form = {k: v for k, v in form.items() if v}
    errors = [
        f"{k} must be a whole number from 1 to {MAX_ID}"
        for k in ("node", "min_id", "max_id")
        if k in form and _int(form[k]) is None
    ]
    if "task" in form and (problem := text_problem(form["task"])) is not None:
        errors.append(f"task {problem}")
        del form["task"]  # not shown again, nor carried into the paging links
    state = None
    if "state" in form:
        try:
            state = JobState(form["state"])
        except ValueError:
            errors.append("unknown state")
    where = JobFilter(
        state=state,
        task=form.get("task"),
        node_id=_int(form.get("node")),
        min_id=_int(form.get("min_id")),
        max_id=_int(form.get("max_id")),
    )
    return form, where, "; ".join(errors) or None


def _int(text: str | None) -> int | None:
    """A positive id that fits the datastore's 64-bit integers, else None."""
    try:
        number = int(text) if text else None
    except ValueError:
        return None
    return number if number is not None and 1 <= number <= MAX_ID else None
