"""The CLI as a user meets it: clear one-line errors and non-zero exits, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.model import NodeState
from shoal.store import open_store

from realnodes import Cluster, shoal, until


def job_total(url: str) -> int:
    return sum(open_store(url).read_cluster().job_counts.values())


def assert_clean_error(out: object, *needles: str) -> None:
    assert out.returncode != 0  # type: ignore[attr-defined]
    err = out.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--args", "[1,"], "--args is not valid JSON"),
        (["--args", '{"n": 1}'], "--args must be an array"),
        (["--kwargs", "[1]"], "--kwargs must be an object"),
        (["--args", "@big.json"], "over the 1000000-byte cap"),
        (["--args", "@missing.json"], "cannot read --args from"),
    ],
)
def test_bad_submit_input_is_refused_and_nothing_is_written(
    sqlite_url: str, args: list[str], needle: str, tmp_path: Path
) -> None:
    (tmp_path / "big.json").write_text(json.dumps(["x" * 1_100_000]))
    args = [a.replace("@", f"@{tmp_path}/") for a in args]
    out = shoal("submit", "work", *args, "--db", sqlite_url, "--force")
    assert_clean_error(out, needle)
    assert job_total(sqlite_url) == 0


def test_submit_checks_arguments_against_the_app(sqlite_url: str) -> None:
    out = shoal(
        "submit", "work", "--kwargs", '{"bogus": 1}', "--app", "systasks:app", "--db", sqlite_url
    )
    assert_clean_error(out, "bad arguments for task 'work'")
    ok = shoal("submit", "work", "--args", "[21]", "--app", "systasks:app", "--db", sqlite_url)
    assert ok.returncode == 0 and ok.stdout.strip() == "1"


def test_unknown_task_is_refused_when_live_nodes_do_not_register_it(
    sqlite_cluster: Cluster,
) -> None:
    cluster = sqlite_cluster
    cluster.start("a")
    store = open_store(cluster.url)
    until(lambda: any(n.state is NodeState.WAITING for n in store.read_cluster().nodes))
    out = shoal("submit", "nosuch", "--db", cluster.url)
    assert_clean_error(out, "no live node registers task 'nosuch'", "work")
    assert job_total(cluster.url) == 0


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sqlite://host/x.db", "takes no host"),
        ("mysql://x", "unsupported datastore URL"),
        ("sqlite:////no/such/dir/x.db", "does not exist"),
    ],
)
def test_bad_datastore_url_gets_a_clear_message(url: str, needle: str) -> None:
    assert_clean_error(shoal("status", "--db", url), needle)


def test_status_on_a_missing_datastore_says_what_to_run(tmp_path: Path) -> None:
    out = shoal("status", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert_clean_error(out, "shoal init")


def test_app_that_cannot_be_imported_is_reported(sqlite_url: str) -> None:
    out = shoal("node", "--app", "no_such_module:app", "--db", sqlite_url)
    assert_clean_error(out, "cannot import 'no_such_module'")
    out = shoal("node", "--app", "systasks:nothing", "--db", sqlite_url)
    assert_clean_error(out, "is not a shoal.App")


def test_second_node_with_the_same_name_is_refused(sqlite_cluster: Cluster) -> None:
    cluster = sqlite_cluster
    cluster.start("same", lease_s=30)
    store = open_store(cluster.url)
    until(lambda: any(n.name == "same" for n in store.read_cluster().nodes))
    second = cluster.start("same", lease_s=30)
    assert second.wait(timeout=30) == 2
    assert "already exists" in cluster.log("same")


def test_status_and_job_json(sqlite_url: str) -> None:
    job_id = shoal("submit", "work", "--args", "[3]", "--db", sqlite_url, "--force").stdout.strip()
    status = json.loads(shoal("status", "--json", "--db", sqlite_url).stdout)
    assert status["partitions"] == 128 and status["jobs"]["queued"] == 1
    assert status["nodes"] == []
    job = json.loads(shoal("job", job_id, "--json", "--db", sqlite_url).stdout)
    assert (job["state"], job["task"], job["args"]) == ("queued", "work", [3])
    assert_clean_error(shoal("job", "999", "--db", sqlite_url), "no job with id 999")
    assert_clean_error(shoal("pause", "ghost", "--db", sqlite_url), "no node with id or name")


def test_help_explains_every_command() -> None:
    out = shoal("--help")
    for command in ("node", "submit", "status", "job", "pause", "resume", "demo", "observe"):
        assert command in out.stdout
    assert "--concurrency" in shoal("node", "--help").stdout
