"""Make docs/screenshots/*.png: each observer view over a simulated, realistic cluster.

    .venv/bin/python tests/observer/make_screenshots.py [--seconds 240] [--out docs/screenshots]

Real nodes run in-process in real time (datastore time is the real clock) on steered tasks
(tests/observer/cluster.py): three nodes work through a steady trickle and one burst of jobs,
each job reporting progress until it is done; one node pauses and resumes, one stalls (its
heartbeats hang) and is declared dead, a fourth joins. Then headless Chromium photographs
every page. Takes about `--seconds` plus half a minute.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from shoal.model import JobFilter, JobState
from shoal.node import Node
from shoal.observer.server import create_app
from shoal.store import Store, open_store

from cluster import Cluster, StallingStore, submit
from served import CHROMIUM, CHROMIUM_ARGS, ServerThread

TASKS = {
    "resize": lambda r: (f"photos/{r.randrange(10_000):05d}.jpg",),
    "report": lambda r: (r.choice(["daily", "weekly"]), r.randrange(2020, 2027)),
    "send_email": lambda r: (f"user{r.randrange(500)}@example.com",),
}
# The defaults a user gets, but a short lease, so that the stalled node dies on camera.
SETTINGS = {"lease_s": 6.0, "heartbeat_s": 1.0, "progress_flush_s": 0.25}


def simulate(
    store: Store, db_path: str, seconds: float, rng: random.Random, stop: threading.Event
) -> None:
    """Run a cluster until `stop`; the pause, death and join happen within `seconds`."""
    cluster = Cluster(store, tasks=list(TASKS))
    stalling = StallingStore(db_path, stall_s=None)  # gamma's own store: its heartbeats hang
    nodes = {
        name: cluster.start(name, store=stalling if name == "gamma" else None, **SETTINGS)
        for name in ("alpha", "beta", "gamma")
    }
    script = {0.25: "pause beta", 0.42: "resume beta", 0.55: "stall gamma", 0.7: "start delta"}
    start = time.monotonic()
    speed: dict[int, float] = {}
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - start
            for at, action in list(script.items()):
                if elapsed >= at * seconds:
                    del script[at]
                    act(cluster, stalling, action, nodes)
            rate = 3 if elapsed < 0.3 * seconds or elapsed > 0.34 * seconds else 40
            for _ in range(rng.randrange(rate + 1)):
                task = rng.choice(list(TASKS))
                submit(store, task, *TASKS[task](rng))
            steer(cluster, rng, speed)
            stop.wait(0.25)  # the simulated cluster's own pace, not a test waiting
    finally:
        for node in cluster.nodes:  # before gamma wakes: it leaves instead of registering again
            node.request_stop(grace_s=0.0)
        stalling.running.set()
        cluster.close()
        stalling.close()


def act(cluster: Cluster, stalling: StallingStore, action: str, nodes: dict[str, Node]) -> None:
    verb, name = action.split()
    node = nodes.get(name)
    if verb == "pause" and node:
        cluster.store.request_pause(str(node.node_id), True)  # it drains, then moves to paused
    elif verb == "resume" and node:
        cluster.store.request_pause(str(node.node_id), False)
    elif verb == "stall" and node:
        stalling.running.clear()  # its next heartbeat hangs: its lease runs out
    elif verb == "start":
        nodes[name] = cluster.start(name, **SETTINGS)


def steer(cluster: Cluster, rng: random.Random, speed: dict[int, float]) -> None:
    """Tell every running attempt how far it is, and end those whose time is up."""
    store = cluster.store
    now = store.now()
    for job in store.list_jobs(JobFilter(state=JobState.RUNNING), limit=500):
        rate = speed.setdefault(job.id, rng.uniform(0.04, 0.3))
        fraction = min(1.0, (now - (job.started_at or now)) * rate)
        if fraction < 1.0:
            cluster.steered.report(job.id, fraction, f"step {int(fraction * 10) + 1} of 10")
        elif rng.random() < 0.06:
            cluster.steered.fail(job.id, ConnectionError("mail relay refused the connection"))
        else:
            cluster.steered.succeed(job.id, {"ok": True, "bytes": rng.randrange(10_000, 900_000)})


def photograph(store: Store, out: Path, since: float, until: float) -> None:
    from playwright.sync_api import sync_playwright

    failed = next(iter(store.list_jobs(JobFilter(state=JobState.FAILED), limit=1)), None)
    running = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=100)
    oldest_running = min((job.id for job in running), default=20)
    death = next(
        (
            e.at
            for e in store.read_history(since, until)
            if e.to_state and e.to_state.value == "dead"
        ),
        until - 30,
    )
    views = {
        "overview": "/",
        "partitions": "/partitions",
        "nodes": "/nodes",
        "timeline": f"/timeline?since={since - 15:.0f}&until={until + 5:.0f}&at={death + 2:.1f}",
        "jobs": f"/jobs?max_id={oldest_running + 12}",
        "job": f"/jobs/{failed.id if failed else 1}",
    }
    out.mkdir(parents=True, exist_ok=True)
    with ServerThread(create_app(store, None)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, path in views.items():
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(server.url + path)
            ready = {
                "overview": "#events li",
                "partitions": ".cell",
                "nodes": ".node",
                "timeline": "#moment-nodes tbody tr",
                "jobs": "table",
                "job": "#job",
            }[name]
            page.wait_for_selector(ready, timeout=15_000)
            page.wait_for_timeout(1200)  # let the charts settle after the first event
            page.screenshot(path=str(out / f"{name}.png"), full_page=name != "jobs")
            page.close()
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        phone.goto(server.url + "/nodes")
        phone.wait_for_selector(".node", timeout=15_000)
        phone.screenshot(path=str(out / "nodes-phone.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    db_path = str(Path(tempfile.mkdtemp()) / "screens.db")
    url = f"sqlite:///{db_path}"
    cluster, observed = open_store(url), open_store(url)
    cluster.initialize()
    print(f"simulating {args.seconds:.0f} s of cluster life in {url} …")
    began = cluster.now()
    stop = threading.Event()
    runner = threading.Thread(
        target=simulate, args=(cluster, db_path, args.seconds, random.Random(7), stop), daemon=True
    )
    runner.start()
    stop.wait(args.seconds)
    try:
        # The cluster keeps working while the pictures are taken, so the pages are live.
        photograph(observed, args.out, began, observed.now())
    finally:
        stop.set()
        runner.join()
    print(f"screenshots in {args.out}/")


if __name__ == "__main__":
    main()
