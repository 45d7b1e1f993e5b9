"""The observer's JSON API and pages over a real SQLite store filled through the port."""

from __future__ import annotations

import re
import sqlite3

import httpx
import pytest
from fastapi.testclient import TestClient

from shoal.model import JobState, NewJob, NodeState, ScheduledJob, ScheduleSpec, TaskLimit
from shoal.observer import views
from shoal.observer.server import create_app
from shoal.store import Store, texts

from cluster import HOSTILE, Cluster, later, submit
from served import ServerThread

PAGES = ["/", "/partitions", "/nodes", "/timeline", "/jobs", "/schedules"]


def test_overview_counts_nodes_jobs_and_running_progress(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha", concurrency=2)
    ids = submit(obs_store, "resize", "a.png", count=6, width=100)  # alpha alone: all its own
    claimed = cluster.running(alpha, 2)
    cluster.start("beta")
    assert claimed
    cluster.progress(claimed[0].id, 0.25, "a quarter")

    body = client.get("/api/overview").json()

    assert [n["name"] for n in body["nodes"]] == ["alpha", "beta"]
    assert body["nodes_by_state"]["working"] + body["nodes_by_state"]["waiting"] == 2
    assert body["jobs_by_state"]["queued"] + body["jobs_by_state"]["running"] == len(ids)
    running = {job["id"]: job for job in body["running_jobs"]}
    assert running[claimed[0].id]["progress"] == pytest.approx(0.25)
    assert running[claimed[0].id]["progress_message"] == "a quarter"
    assert sum(len(n["section"]) for n in body["nodes"]) == body["partitions"] == 32
    assert any(e["kind"] == "rebalance" for e in body["events"])


def test_partition_map_now_and_at_a_past_moment(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha")
    alone = later(obs_store)
    later(obs_store)
    beta = cluster.start("beta")

    now = client.get("/api/partitions").json()
    then = client.get("/api/partitions", params={"at": alone}).json()

    assert set(now["owners"]) == {alpha.node_id, beta.node_id}
    assert now["previous_owners"] == [alpha.node_id] * 32
    assert (
        sum(1 for a, b in zip(now["previous_owners"], now["owners"], strict=True) if a != b) == 16
    )
    assert then["owners"] == [alpha.node_id] * 32
    assert [(n["name"], n["state"], len(n["section"])) for n in then["nodes"]] == [
        ("alpha", "waiting", 32)
    ]
    assert now["rebalances"][0]["moved"] == 16


def test_timeline_has_a_lane_per_node_and_marks_the_death(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha")
    later(obs_store)
    gamma = cluster.start("gamma")
    for step in (cluster.pause, cluster.resume, cluster.stop):
        later(obs_store)
        step(gamma)

    body = client.get("/api/timeline", params={"range": "15m"}).json()

    lanes = {lane["name"]: [s["state"] for s in lane["segments"]] for lane in body["lanes"]}
    assert lanes["alpha"][-1] == "waiting"
    # Registering and moving to waiting are two writes: when a clock tick falls between them
    # the lane opens with a sliver of `initializing`.
    assert lanes["gamma"] in (
        ["waiting", "paused", "waiting", "dead"],
        ["initializing", "waiting", "paused", "waiting", "dead"],
    )
    kinds = [(e["kind"], e["node_name"], e["to_state"]) for e in body["events"]]
    assert ("node_state", "gamma", "dead") in kinds
    assert ("pause_request", "gamma", None) in kinds
    assert any(kind == "rebalance" for kind, _, _ in kinds)
    assert len(body["throughput"]) == 120
    assert alpha.node_id in {lane["node_id"] for lane in body["lanes"]}


def test_timeline_rejects_a_backwards_range(client: TestClient):
    assert client.get("/api/timeline", params={"since": 100, "until": 50}).status_code == 422
    assert client.get("/api/timeline", params={"range": "7y"}).status_code == 422


MOMENT_RULE = "must be a time in epoch seconds from 0 to 253402300799"


@pytest.mark.parametrize(
    ("url", "dropped", "notice"),
    [
        ("/partitions?at=nan", "at", f"at {MOMENT_RULE}; showing the map as it is now"),
        ("/partitions?at=abc", "at", f"at {MOMENT_RULE}; showing the map as it is now"),
        ("/timeline?since=nan", "since", f"since {MOMENT_RULE}; showing the last 15m"),
        (
            "/timeline?range=7d",
            "range",
            "range must be one of 15m, 1h, 6h, 24h; showing the last 15m",
        ),
        (
            "/timeline?range=1h&since=100&until=50",
            "since until",
            "need since &lt; until, at most 31 days apart; showing the last 1h",
        ),
        ("/timeline?at=inf", "at", f"at {MOMENT_RULE}; no moment is shown"),
    ],
)
def test_live_pages_say_which_parameter_is_bad_and_go_on_without_it(
    client: TestClient, url: str, dropped: str, notice: str
):
    response = client.get(url)

    assert response.status_code == 200
    assert f'<p class="notice bad" id="query-notice">{notice}</p>' in response.text
    assert f'<body data-page="{url[1:].partition("?")[0]}" data-rejected="{dropped}">' in (
        response.text
    )


@pytest.mark.parametrize(
    "url", ["/partitions?at=100", "/timeline?range=1h&at=100.5", "/timeline?since=100&until=200"]
)
def test_live_pages_with_good_parameters_have_no_notice(client: TestClient, url: str):
    html = client.get(url).text
    assert "query-notice" not in html and "data-rejected" not in html


@pytest.mark.parametrize(
    "at", ["0", "1e3", " 7 ", "1_000", "-1", "253402300799", "253402300800", "0x10", "", "nan"]
)
def test_the_partition_page_accepts_the_moments_the_api_accepts(client: TestClient, at: str):
    api_accepts = client.get("/api/partitions", params={"at": at}).status_code == 200
    page_accepts = "query-notice" not in client.get("/partitions", params={"at": at}).text
    assert page_accepts == api_accepts


def test_jobs_filter_by_state_task_node_and_id_range(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha", concurrency=2)
    resize = submit(obs_store, "resize", "a.png", count=5)
    report = submit(obs_store, "report", "daily", count=5)
    done = cluster.running(alpha, 2)
    alpha.stop(wait=False)  # it claims nothing more, and stays while done[1] runs
    cluster.succeed(done[0].id, {"ok": True})

    def ids(**params: object) -> list[int]:
        return [j["id"] for j in client.get("/api/jobs", params=params).json()["jobs"]]

    assert ids() == sorted(resize + report, reverse=True)
    assert ids(task="report") == sorted(report, reverse=True)
    assert ids(state="succeeded") == [done[0].id]
    assert ids(node=alpha.node_id) == sorted(j.id for j in done)[::-1]
    assert ids(min_id=resize[2], max_id=report[1]) == list(range(report[1], resize[2] - 1, -1))


def test_jobs_paginate_newest_first_without_gaps(obs_store: Store, client: TestClient):
    all_ids = submit(obs_store, "resize", "a.png", count=23)
    seen: list[int] = []
    before = None
    for _ in range(10):
        params = {"limit": 10} | ({"before_id": before} if before else {})
        page = client.get("/api/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == sorted(all_ids, reverse=True)


def test_job_detail_and_missing_job(obs_store: Store, cluster: Cluster, client: TestClient):
    alpha = cluster.start("alpha")
    [job_id] = submit(obs_store, "send_email", "a@example.com", retries=2)
    cluster.running(alpha, 1)
    cluster.fail(job_id, ConnectionError("refused"))

    body = client.get(f"/api/jobs/{job_id}").json()

    assert body["state"] == "failed"
    assert body["args"] == ["a@example.com"] and body["kwargs"] == {"retries": 2}
    assert body["error"] == "ConnectionError: refused"
    assert body["traceback"].startswith("Traceback")
    assert client.get("/api/jobs/999999").status_code == 404
    assert client.get("/jobs/999999").status_code == 404


@pytest.mark.parametrize("delay_s", [3e11, 1e17, 1e300])
def test_a_job_due_past_year_9999_shows_its_run_after_in_words(store: Store, delay_s: float):
    # Rows like these were stored before submit refused such delays; pages must still show them.
    [job_id] = store.submit_jobs([NewJob("resize", '["a.png"]', "{}", delay_s=delay_s)])
    client = TestClient(create_app(store, None))

    page = client.get(f"/jobs/{job_id}")
    document = client.get(f"/api/jobs/{job_id}")

    assert page.status_code == 200
    assert "<dt>runs after</dt><dd>beyond year 9999</dd>" in page.text
    assert re.search(r"<dt>created</dt><dd>\d{4}-\d\d-\d\d [\d:]{8} UTC</dd>", page.text)
    assert document.status_code == 200 and document.json()["run_after"] >= delay_s
    assert client.get("/jobs").status_code == 200


def test_job_detail_shows_priority_and_key(obs_store: Store, client: TestClient):
    new = NewJob("resize", '["a.png"]', "{}", priority=-7, key="<b>invoice-42</b>")
    [job_id] = obs_store.submit_jobs([new])
    body = client.get(f"/api/jobs/{job_id}").json()
    assert (body["priority"], body["key"]) == (-7, "<b>invoice-42</b>")
    assert client.get("/api/jobs").json()["jobs"][0]["priority"] == -7
    page = client.get(f"/jobs/{job_id}").text
    assert '<dd id="job-priority">-7</dd>' in page
    assert "&lt;b&gt;invoice-42&lt;/b&gt;" in page and "<b>invoice-42" not in page


def test_queued_jobs_no_live_node_can_claim_are_said_to_wait_until_one_registers_their_task(
    obs_store: Store, client: TestClient
):
    obs_store.register_node("old", "host", 1, 2, ["resize", "report"], 30.0)
    [waiting, *_] = submit(obs_store, "newtask", "a.png", count=3)
    [served] = submit(obs_store, "resize", "a.png")
    notice = "waiting for a node that registers newtask: no live node does"

    def page_notice(job_id: int) -> str | None:
        """The job page's waiting notice as text, or None when it is hidden."""
        html = client.get(f"/jobs/{job_id}").text
        found = re.search(r'<p class="notice" id="job-waiting"( hidden)?>(.*?)</p>', html)
        assert found is not None
        return None if found[1] else re.sub(r"<[^>]+>", "", found[2])

    overview = client.get("/api/overview").json()
    assert overview["tasks_without_node"] == [{"task": "newtask", "queued": 3}]
    assert client.get(f"/api/jobs/{waiting}").json()["waiting_for"] == texts.waiting_for_node(
        "newtask"
    )
    assert page_notice(waiting) == notice
    assert client.get(f"/api/jobs/{served}").json()["waiting_for"] is None
    assert page_notice(served) is None

    obs_store.register_node("new", "host", 2, 2, ["newtask"], 30.0)

    assert client.get("/api/overview").json()["tasks_without_node"] == []
    assert client.get(f"/api/jobs/{waiting}").json()["waiting_for"] is None
    assert page_notice(waiting) is None


def test_only_queued_jobs_count_as_waiting_for_a_node():
    counts = {
        ("b", JobState.QUEUED): 2,
        ("a", JobState.QUEUED): 1,
        ("a", JobState.FAILED): 5,
        ("c", JobState.RUNNING): 1,
        ("d", JobState.QUEUED): 0,
        ("live", JobState.QUEUED): 4,
    }
    assert views.tasks_without_node(counts, {"live"}) == [
        views.TaskWithoutNode("a", 1),
        views.TaskWithoutNode("b", 2),
    ]


@pytest.mark.parametrize("path", ["/jobs", "/jobs/{id}"])
def test_hostile_job_strings_render_as_text(
    obs_store: Store, cluster: Cluster, client: TestClient, path: str
):
    alpha = cluster.start("alpha")
    [job_id] = submit(obs_store, "resize", HOSTILE, note=HOSTILE)
    cluster.running(alpha, 1)
    cluster.fail(job_id, RuntimeError(HOSTILE))  # the error and the traceback both hold it

    html = client.get(path.format(id=job_id)).text

    assert "<script>window.__pwned" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html


def test_every_response_carries_a_strict_content_security_policy(client: TestClient):
    for path in [*PAGES, "/api/overview", "/metrics", "/livez", "/static/main.js"]:
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert response.headers["x-content-type-options"] == "nosniff"


def test_pages_load_no_third_party_resources(client: TestClient):
    for path in PAGES:
        html = client.get(path).text
        assert "http://" not in html and "https://" not in html, path
        assert "<script>" not in html and " style=" not in html, path


def test_observer_writes_nothing(obs_store: Store, cluster: Cluster, client: TestClient, tmp_path):
    # Between two heartbeats, a node running a job writes nothing either.
    alpha = cluster.start("alpha", heartbeat_s=30.0, lease_s=60.0)
    [job_id] = submit(obs_store, "resize", "a.png")
    cluster.running(alpha, 1)
    watcher = sqlite3.connect(tmp_path / "observed.db")
    before = watcher.execute("PRAGMA data_version").fetchone()[0]
    changes_before = watcher.total_changes

    for path in [
        *PAGES,
        f"/jobs/{job_id}",
        "/api/overview",
        "/api/partitions",
        "/api/timeline",
        "/api/jobs",
        f"/api/jobs/{job_id}",
        "/metrics",
    ]:
        assert client.get(path).status_code == 200, path

    # data_version changes when any other connection commits a change to the file.
    assert watcher.execute("PRAGMA data_version").fetchone()[0] == before
    assert watcher.total_changes == changes_before
    watcher.close()


def test_openapi_describes_the_json_api(client: TestClient):
    spec = client.get("/api/openapi.json").json()
    for path in [
        "/api/overview",
        "/api/partitions",
        "/api/timeline",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/events",
    ]:
        assert path in spec["paths"], path
    assert all(method == "get" for ops in spec["paths"].values() for method in ops)


def test_event_stream_sends_the_overview(obs_store: Store, cluster: Cluster):
    cluster.start("alpha")
    with (
        ServerThread(create_app(obs_store, None)) as server,
        httpx.stream("GET", f"{server.url}/api/events", timeout=10) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        event = next(line for line in lines if line.startswith("event:"))
        data = next(lines)
    assert event == "event: overview"
    assert '"name":"alpha"' in data


def test_job_state_values_match_the_model(client: TestClient):
    html = client.get("/jobs").text
    for state in JobState:
        assert f'value="{state.value}"' in html


def test_partition_map_and_timeline_show_backlog_loans_and_load_moves(
    obs_store: Store, client: TestClient
):
    from shoal.load import LoadPolicy
    from shoal.model import NewJob, NodeState

    def register(name: str, slots: int) -> int:
        node = obs_store.register_node(name, "host", 1, slots, ["resize"], 30.0)
        assert obs_store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
        return node.id

    busy, free = register("busy", 1), register("free", 4)
    owners = obs_store.read_cluster().owners
    waiting = [p for p, owner in enumerate(owners) if owner == busy]
    for job_id in obs_store.submit_jobs([NewJob("resize", "[]", "{}")] * (2 * len(owners))):
        if owners[job_id % len(owners)] != busy:
            obs_store.cancel_job(job_id)
    obs_store.claim_jobs(busy, 1)  # its one slot runs; the rest of its section waits
    before = client.get("/api/partitions").json()
    assert [before["backlog"][p] > 0 for p in waiting].count(True) >= len(waiting) - 1
    assert all(before["oldest_wait_s"][p] is not None for p in waiting if before["backlog"][p])
    nodes = {n["name"]: n for n in client.get("/api/overview").json()["nodes"]}
    assert nodes["busy"]["free_slots"] == 0 and nodes["busy"]["backlog"] > 0
    assert nodes["free"]["free_slots"] == 4 and nodes["free"]["backlog"] == 0

    assert obs_store.follow_load(LoadPolicy(min_wait_s=0.0, hold_s=0.0)) > 0

    after = client.get("/api/partitions").json()
    lent = [p for p in range(len(owners)) if after["owners"][p] != after["homes"][p]]
    assert lent and all(after["owners"][p] == free and after["homes"][p] == busy for p in lent)
    assert after["rebalances"][0]["kind"] == "load_move" and after["rebalances"][0]["moved"]
    timeline = client.get("/api/timeline", params={"range": "15m"}).json()
    kinds = [e["kind"] for e in timeline["events"]]
    assert "load_move" in kinds and "rebalance" in kinds


def test_a_running_job_being_cancelled_is_marked_in_the_api_and_on_its_pages(
    obs_store: Store, cluster: Cluster, client: TestClient
):
    alpha = cluster.start("alpha", concurrency=2)
    submit(obs_store, "resize", "a.png", count=2, width=1)
    asked, other = cluster.running(alpha, 2)
    assert obs_store.cancel_job(asked.id, by=HOSTILE)

    running = {j["id"]: j for j in client.get("/api/overview").json()["running_jobs"]}
    assert running[asked.id]["cancel_requested"] and not running[other.id]["cancel_requested"]
    detail = client.get(f"/api/jobs/{asked.id}").json()
    assert detail["cancel_requested_by"] == HOSTILE and detail["cancel_requested_at"] > 0
    page = client.get(f"/jobs/{asked.id}").text
    assert 'id="job-cancelling">cancel requested' in page and HOSTILE not in page  # escaped
    listed = client.get("/jobs").text
    assert listed.count("cancel requested") == 1


def test_schedules_show_each_declared_schedule_with_its_last_and_next_run(
    obs_store: Store, client: TestClient
):
    every = ScheduleSpec("beat", "resize", None, 5.0, "UTC", '["a.png"]', "{}")
    nightly = ScheduleSpec("nightly", "report", "0 3 * * *", None, "Europe/Paris", "[]", "{}")
    obs_store.declare_schedules([every, nightly])
    start = obs_store.read_schedules()[0].fired_through
    later(obs_store)
    tick = start + 0.001
    [job_id] = obs_store.fire_schedule(
        "beat", start, [ScheduledJob(tick, NewJob("resize", '["a.png"]', "{}"))], tick
    ) or [0]

    body = client.get("/api/schedules").json()

    beat, night = body["schedules"]
    assert (beat["name"], beat["when"], beat["last_tick"], beat["last_job_id"]) == (
        "beat",
        "every 5s",
        tick,
        job_id,
    )
    assert beat["last_job_state"] == "queued" and beat["next_tick"] % 5 == 0
    assert beat["next_tick"] > tick and not beat["has_live_node"]
    assert (night["tz"], night["last_tick"], night["when"]) == (
        "Europe/Paris",
        None,
        "0 3 * * * (Europe/Paris)",
    )


def test_schedules_page_shows_hostile_names_as_text(obs_store: Store, client: TestClient):
    hostile = "<script>alert(1)</script>"
    spec = ScheduleSpec(hostile, "t<b>", "0 3 * * *", None, "Europe/Paris", "[]", "{}")
    obs_store.declare_schedules([spec])

    html = client.get("/schedules").text

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and hostile not in html
    assert "t&lt;b&gt;" in html and "0 3 * * * (Europe/Paris)" in html and "never" in html
    assert "03:00:00 CE" in html  # the next run, in the schedule's own zone


def test_overview_lists_task_limits_and_their_use(obs_store: Store, client: TestClient):
    limits = [TaskLimit("resize", 3, 2.5)]
    node = obs_store.register_node("alpha", "host", 1, 4, ["resize"], 30.0, limits)
    assert obs_store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)

    body = client.get("/api/overview").json()

    assert body["limits"] == [
        {
            "limit": {"task": "resize", "max_running": 3, "max_per_s": 2.5},
            "running": 0,
            "recent_starts": 0,
        }
    ]
