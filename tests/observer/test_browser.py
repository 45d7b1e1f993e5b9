"""The real page in Debian's headless Chromium: it loads, shows the nodes, follows the store by
itself, and a hostile job payload runs no script."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from shoal.model import TaskLimit
from shoal.node import Node
from shoal.store import Store

from cluster import HOSTILE, Cluster, later, submit
from served import ServerThread

pytestmark = pytest.mark.browser


def card(page: Any, node: Node) -> Any:
    return page.locator(f"#node-{node.node_id}")


def test_nodes_page_shows_each_node_and_its_state(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha", concurrency=1)
    submit(obs_store, "resize", "a.png")  # alpha alone: its section is every partition
    [job] = cluster.running(alpha, 1)
    beta = cluster.start("beta")  # nothing left to claim: it waits
    cluster.progress(job.id, 0.4, "resizing")

    page.goto(f"{live_server.url}/nodes")

    expect(card(page, alpha)).to_have_attribute("data-state", "working")
    expect(card(page, beta)).to_have_attribute("data-state", "waiting")
    expect(card(page, alpha).locator("h2")).to_have_text("alpha")
    expect(card(page, alpha).locator(".jobs-running")).to_contain_text("resizing")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    assert page.errors == []


def test_page_follows_pause_and_death_without_reloading(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")
    beta = cluster.start("beta")
    page.goto(f"{live_server.url}/nodes")
    expect(card(page, beta)).to_have_attribute("data-state", "waiting")
    page.evaluate("window.__same_document = true")

    cluster.pause(beta)
    expect(card(page, beta)).to_have_attribute("data-state", "paused")
    cluster.stop(alpha)
    expect(card(page, alpha)).to_have_attribute("data-state", "dead")

    assert page.evaluate("window.__same_document") is True  # updated in place, never reloaded
    assert page.errors == []


def test_overview_updates_counts_live(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    cluster.start("alpha")
    page.goto(live_server.url)
    expect(page.locator("#count-queued")).to_have_text("0")
    expect(page.locator("#live-nodes")).to_have_text("1")

    # Queued to run in an hour: a live node leaves them queued until then.
    submit(obs_store, "resize", "a.png", count=7, delay_s=3600.0)
    cluster.start("beta")

    expect(page.locator("#count-queued")).to_have_text("7")
    expect(page.locator("#live-nodes")).to_have_text("2")
    expect(page.locator("#throughput-chart svg")).to_be_visible()
    assert page.errors == []


def test_overview_shows_task_limits_only_while_a_task_declares_one(
    live_server: ServerThread, obs_store: Store, page: Any
):
    page.goto(live_server.url)
    expect(page.locator("#live-nodes")).to_have_text("0")
    expect(page.locator("#limits-panel")).to_be_hidden()

    hostile = "<img src=x onerror=alert(1)>"
    limits = [TaskLimit(hostile, 3, 2.5)]
    obs_store.register_node("alpha", "host", 1, 4, [hostile], 30.0, limits)

    rows = page.locator("#limits tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(hostile)  # the name as text, never markup
    expect(rows.first).to_contain_text("0 / 3")
    expect(rows.first).to_contain_text("0 / 2.5")
    assert page.locator("#limits img").count() == 0 and page.errors == []


def test_overview_lists_a_task_no_live_node_registers_with_its_name_as_text(
    live_server: ServerThread, obs_store: Store, page: Any
):
    hostile = "<script>alert(1)</script>"
    obs_store.register_node("old", "host", 1, 2, ["resize"], 30.0)
    submit(obs_store, hostile, count=2)
    submit(obs_store, "resize")

    page.goto(live_server.url)

    items = page.locator("#without-node li")
    expect(items).to_have_count(1)
    expect(items.first.locator(".task")).to_have_text(hostile)  # the name as text, never markup
    expect(items.first).to_contain_text("2 queued")
    expect(page.locator("#without-node-panel")).to_be_visible()
    assert page.locator("#without-node script").count() == 0

    obs_store.register_node("new", "host", 2, 2, [hostile], 30.0)

    expect(page.locator("#without-node-panel")).to_be_hidden()
    assert page.errors == []  # no dialog opened, no script error


def test_job_page_drops_the_waiting_notice_once_a_node_registers_the_task(
    live_server: ServerThread, obs_store: Store, page: Any
):
    [job_id] = submit(obs_store, "newtask", "a.png")
    page.goto(f"{live_server.url}/jobs/{job_id}")
    expect(page.locator("#job-waiting")).to_have_text(
        "waiting for a node that registers newtask: no live node does"
    )

    obs_store.register_node("new", "host", 1, 2, ["newtask"], 30.0)  # registers, claims nothing

    expect(page.locator("#job-waiting")).to_be_hidden()
    assert page.errors == []


def test_hostile_payload_runs_no_script(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")
    [running] = submit(obs_store, HOSTILE, HOSTILE, note=HOSTILE)
    [failed] = submit(obs_store, "resize", HOSTILE)
    jobs = {job.id for job in cluster.running(alpha, 2)}
    assert jobs == {running, failed}
    cluster.progress(running, 0.3, HOSTILE)
    cluster.fail(failed, RuntimeError(HOSTILE))

    for path, shown in [
        ("/nodes", ".jobs-running"),
        ("/jobs", "table"),
        (f"/jobs/{failed}", "#job-error"),
        (f"/jobs/{running}", "#job-args"),
    ]:
        page.goto(live_server.url + path)
        expect(page.locator(shown)).to_contain_text("<script>window.__pwned = 1</script>")
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator("img[src=x]").count() == 0, path
    assert page.errors == []  # no dialog opened, no script error


def test_timeline_shows_the_cluster_at_a_picked_moment(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")
    alone = later(obs_store)
    later(obs_store)
    cluster.start("beta")

    page.goto(f"{live_server.url}/timeline?range=15m&at={alone}")

    expect(page.locator("#timeline-chart svg")).to_be_visible()
    expect(page.locator("#moment-nodes tbody tr")).to_have_count(1)
    expect(page.locator("#moment-nodes tbody")).to_contain_text("alpha")
    expect(page.locator("#moment-grid .cell")).to_have_count(32)
    assert page.locator(f"#moment-grid .cell[data-owner='{alpha.node_id}']").count() == 32
    assert page.errors == []


def test_partition_map_colours_every_partition_by_owner(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")
    page.goto(f"{live_server.url}/partitions")
    expect(page.locator(f"#partition-grid .cell[data-owner='{alpha.node_id}']")).to_have_count(32)

    beta = cluster.start("beta")  # a rebalance: the map redraws by itself

    expect(page.locator(f"#partition-grid .cell[data-owner='{beta.node_id}']")).to_have_count(16)
    expect(page.locator("#partition-grid .cell.moved")).to_have_count(16)
    assert page.errors == []


def test_job_page_follows_the_job_until_it_ends(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")
    [job_id] = submit(obs_store, "resize", "a.png")
    cluster.running(alpha, 1)
    cluster.progress(job_id, 0.3, "resizing")
    page.goto(f"{live_server.url}/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("running")

    cluster.progress(job_id, 0.8, "almost")
    expect(page.locator("#job-progress-message")).to_have_text("almost")
    cluster.succeed(job_id, {"width": 100})

    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-result")).to_contain_text('"width": 100')
    assert page.errors == []


def test_clicking_the_timeline_picks_a_moment(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    before = obs_store.now()
    cluster.start("alpha")
    cluster.start("beta")
    until = later(obs_store)
    page.goto(f"{live_server.url}/timeline?since={before - 1}&until={until}")
    hit = page.locator("#timeline-chart .hit")
    box = hit.bounding_box()

    hit.click(position={"x": box["width"] - 1, "y": 10})  # the range's end: both are live

    expect(page.locator("#moment")).to_be_visible()
    expect(page.locator("#moment-nodes tbody tr")).to_have_count(2)
    assert "at=" in page.url
    assert page.errors == []


def test_partition_page_shows_a_past_assignment(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")
    alone = later(obs_store)
    later(obs_store)
    cluster.start("beta")

    page.goto(f"{live_server.url}/partitions?at={alone}")

    expect(page.locator("#map-caption")).to_contain_text("as it was at")
    expect(page.locator(f"#partition-grid .cell[data-owner='{alpha.node_id}']")).to_have_count(32)
    assert page.errors == []


def test_a_live_page_with_a_bad_parameter_says_so_and_goes_on_without_it(
    live_server: ServerThread, obs_store: Store, cluster: Cluster, page: Any
):
    alpha = cluster.start("alpha")

    page.goto(f"{live_server.url}/partitions?at=nan")

    expect(page.locator("#query-notice")).to_be_visible()
    expect(page.locator("#query-notice")).to_contain_text("at must be a time in epoch seconds")
    expect(page.locator(f"#partition-grid .cell[data-owner='{alpha.node_id}']")).to_have_count(32)
    expect(page).to_have_url(f"{live_server.url}/partitions")

    page.goto(f"{live_server.url}/timeline?range=7d&at=abc")

    expect(page.locator("#query-notice")).to_contain_text("range must be one of 15m, 1h, 6h, 24h")
    expect(page.locator("#timeline-chart svg")).to_be_visible()
    expect(page.locator("[data-range='15m']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#moment")).to_be_hidden()
    expect(page).to_have_url(f"{live_server.url}/timeline")
    assert page.errors == []
