"""The CLI as a user meets it: clear one-line errors and non-zero exits, nothing half-written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shoal.app import DEFAULT_RETRIES
from shoal.cli import cli
from shoal.model import NewJob, NodeState, Outcome, ProgressUpdate
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
    assert job["waiting_for"] == "a node that registers work: no live node does"
    assert_clean_error(shoal("job", "999", "--db", sqlite_url), "no job with id 999")
    assert_clean_error(shoal("pause", "ghost", "--db", sqlite_url), "no node with id or name")


def test_help_explains_every_command() -> None:
    out = shoal("--help")
    for command in ("node", "submit", "status", "job", "pause", "resume", "demo", "observe"):
        assert command in out.stdout
    assert "--concurrency" in shoal("node", "--help").stdout


# -- in-process, through click's runner: data is never markup, errors are one line ------------

HOSTILE_NAMES = ("x[/]", "evil\x1b]0;owned\x07\x1b[2J")
ESCAPED_NAMES = ("x[/]", "evil\\x1b]0;owned\\x07\\x1b[2J")


def run(*args: str) -> Result:
    # Wide enough that rich keeps every name on one line, so the test can find it whole.
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    for needle in needles:
        assert needle in line, result.stderr


def hostile_cluster(url: str) -> int:
    """Two live nodes with hostile names; one running job with a hostile task and progress
    message; one failed job with a hostile error and traceback, whose id is returned."""
    store = open_store(url)
    task = "task[bold]\x1b[31m"
    first, second = (store.register_node(n, "host", 1, 2, [task], 30.0) for n in HOSTILE_NAMES)
    for node in (first, second):
        assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    store.submit_jobs([NewJob(task=task, args_json="[]", kwargs_json="{}", max_attempts=1)] * 2)
    claims = {node.id: store.claim_jobs(node.id, 2) for node in (first, second)}
    [(owner, running)] = [(n, jobs[0]) for n, jobs in claims.items() if jobs][:1]
    [(finisher, failing)] = [(n, j) for n, jobs in claims.items() for j in jobs if j != running]
    store.record_progress(
        owner, [ProgressUpdate(running.id, running.attempts, 0.5, "ok\r\x1b[1A!")]
    )
    error, traceback = "Boom\x1b[8m hidden [red]x[/]", "T\n\x1b[2K"
    outcome = Outcome(failing.id, failing.attempts, False, error=error, traceback=traceback)
    assert store.finish_jobs(finisher, [outcome]) == [True]
    store.close()
    return failing.id


def test_status_shows_hostile_names_literally_and_escaped(sqlite_url: str) -> None:
    hostile_cluster(sqlite_url)
    result = run("status", "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output
    for shown in (*ESCAPED_NAMES, "task[bold]\\x1b[31m", "ok\\x0d\\x1b[1A!"):
        assert shown in result.output
    # Each node's section: its size, then the start of its (spread) partitions.
    assert len(re.findall(r"\b64  \d+, \d+, ", result.output)) == 2


def test_job_shows_hostile_text_escaped(sqlite_url: str) -> None:
    job_id = hostile_cluster(sqlite_url)
    result = run("job", str(job_id), "--db", sqlite_url)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "Boom\\x1b[8m hidden [red]x[/]" in result.output
    assert "task[bold]\\x1b[31m" in result.output
    assert "T\n\\x1b[2K" in result.output


def test_status_json_has_the_documented_fields_from_the_view(sqlite_url: str) -> None:
    hostile_cluster(sqlite_url)
    document = json.loads(run("status", "--json", "--db", sqlite_url).output)
    assert set(document) == {"partitions", "epoch", "nodes", "jobs", "limits"}
    assert document["limits"] == []  # no task of this cluster declares a limit
    assert document["jobs"] == {
        "queued": 0,
        "claimed": 0,
        "running": 1,
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
    }
    names = [node["name"] for node in document["nodes"]]
    assert names == list(HOSTILE_NAMES)  # JSON carries data as it is; json escapes controls
    assert set(document["nodes"][0]) == {
        "id",
        "name",
        "state",
        "section",
        "host",
        "pid",
        "heartbeat_age_s",
        "running",
        "processed",
        "failed",
        "pause_requested",
        "concurrency",
        "free_slots",
        "backlog",
    }
    assert sum(len(node["section"]) for node in document["nodes"]) == 128
    assert document["nodes"][0]["state"] in ("waiting", "working")


@pytest.mark.parametrize("command", ["job", "cancel"])
def test_a_job_id_beyond_64_bits_names_no_job(sqlite_url: str, command: str) -> None:
    result = run(command, "99999999999999999999", "--db", sqlite_url)
    assert_one_line_error(result, "no job with id 99999999999999999999")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--args", "[" * 100_000 + "]" * 100_000], "--args is nested too deeply"),
        (["--kwargs", '{"a":' * 100_000 + "1" + "}" * 100_000], "--kwargs is nested too deeply"),
        (["--delay-s", "nan"], "nan is not a finite number"),
        (["--delay-s", "inf"], "inf is not a finite number"),
        (["--timeout-s", "inf"], "inf is not a finite number"),
        (["--retries", "99999999999999999999"], "0<=x<=1000"),
        (["--priority", "101"], "-100<=x<=100"),
        (["--priority", "high"], "'high' is not a valid integer"),
        (["--key", "x" * 201], "a key must be at most 200 characters, not 201"),
        (["--key", "a\x1b[31mb"], "a key must not hold control characters"),
        (["--key", ""], "a key must be non-empty text"),
        (["--key", "k", "--key-window-s", "inf"], "inf is not a finite number"),
        (["--key-window-s", "5"], "key_window_s needs a key"),
        (["--args", '["a\udcffb"]'], "not valid Unicode"),
        (
            ["--args", '["' + "x" * 600_000 + '"]', "--kwargs", '{"k": "' + "x" * 600_000 + '"}'],
            "--args and --kwargs together are",
        ),
    ],
)
def test_hostile_submit_input_is_a_one_line_error(
    sqlite_url: str, args: list[str], needle: str
) -> None:
    assert_one_line_error(run("submit", "work", "--force", "--db", sqlite_url, *args), needle)
    assert job_total(sqlite_url) == 0


def test_undecodable_argv_is_a_one_line_error(sqlite_url: str) -> None:
    result = run("submit", "w\udcffx", "--force", "--db", sqlite_url)
    assert_one_line_error(result, "the task name 'w\\udcffx' is not valid UTF-8")
    assert_one_line_error(run("pause", "n\udcff", "--db", sqlite_url), "NODE 'n\\udcff'")
    assert_one_line_error(run("status", "--db", "sqlite:///\udcff.db"), "not valid UTF-8")
    assert job_total(sqlite_url) == 0


def test_malformed_percent_encoding_names_the_url_redacted() -> None:
    result = run("status", "--db", "postgresql://u:%ff@127.0.0.1:1/x")
    assert_one_line_error(result, "'postgresql://u:***@127.0.0.1:1/x'", "%-escape")


def test_a_key_value_dsn_password_is_never_echoed() -> None:
    result = run("status", "--db", "host=127.0.0.1 port=1 password=s3cret dbname=x")
    assert_one_line_error(result, "password=***")
    assert "s3cret" not in result.output


def test_submit_with_the_app_takes_the_tasks_retries_and_without_it_the_documented_default(
    sqlite_url: str,
) -> None:
    with_app = run("submit", "flaky", "--args", "[1]", "--app", "systasks:app", "--db", sqlite_url)
    override = run(
        "submit",
        "flaky",
        "--args",
        "[1]",
        "--app",
        "systasks:app",
        "--retries",
        "0",
        "--db",
        sqlite_url,
    )
    bare = run("submit", "flaky", "--args", "[1]", "--force", "--db", sqlite_url)
    store = open_store(sqlite_url)
    attempts = [store.read_job(int(r.stdout)).max_attempts for r in (with_app, override, bare)]
    assert attempts == [3, 1, DEFAULT_RETRIES + 1]
    help_text = " ".join(run("submit", "--help").output.split())
    assert f"without --app, {DEFAULT_RETRIES}" in help_text


def test_schedules_print_hostile_names_as_text(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.model import ScheduleSpec

    monkeypatch.setenv("COLUMNS", "200")  # one line per schedule
    store = open_store(sqlite_url)
    hostile = "[bold red]x[/]\x1b]0;owned\x07"
    store.declare_schedules([ScheduleSpec(hostile, "t[u]", None, 60.0, "UTC", "[]", "{}")])
    store.close()
    shown = shoal("schedules", "--db", sqlite_url, check=True).stdout
    assert "[bold red]x[/]" in shown and "\x1b" not in shown and "\x07" not in shown
    assert "t[u]" in shown and "never" in shown and "no live node" in shown
    empty = shoal("schedules", "--db", sqlite_url, "--json", check=True)
    assert json.loads(empty.stdout)["schedules"][0]["name"] == hostile
    forgot = shoal("schedules", "--db", sqlite_url, "--forget", hostile, check=True).stdout
    assert "forgot schedule" in forgot and "\x1b" not in forgot
    missing = shoal("schedules", "--db", sqlite_url, "--forget", hostile)
    assert missing.returncode != 0 and "no schedule named" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lease-s", "inf"], "inf is not a finite number"),
        (["--lease-s", "nan"], "nan is not a finite number"),
        (["--lease-s", "1e300"], "the lease must be a finite number of seconds up to 3600"),
        (["--grace-s", "nan"], "nan is not a finite number"),
        (["--grace-s", "inf"], "inf is not in the range"),
        (["--name", "n\udcff"], "the node name 'n\\udcff' is not valid UTF-8"),
    ],
)
def test_node_options_that_would_break_the_cluster_are_refused(
    sqlite_url: str, args: list[str], needle: str
) -> None:
    """A lease that never runs out would keep a dead node's section, and its jobs, for ever."""
    result = run("node", "--app", "systasks:app", "--db", sqlite_url, *args)
    assert_one_line_error(result, needle)
    assert not open_store(sqlite_url).read_cluster().nodes


@pytest.mark.parametrize("value", ["nan", "inf", "1e300"])
def test_top_refuses_a_refresh_that_is_not_a_sane_number(sqlite_url: str, value: str) -> None:
    assert_one_line_error(run("top", "--refresh-s", value, "--db", sqlite_url))


def test_args_from_a_file_that_is_not_utf8_is_a_one_line_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_bytes(b'["\xff\xfe", 1]')
    result = run("submit", "work", "--force", "--db", sqlite_url, "--args", f"@{tmp_path}/bad.json")
    assert_one_line_error(result, "is not UTF-8 text")
    assert job_total(sqlite_url) == 0


def test_submit_to_a_path_that_holds_no_datastore_makes_none(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    result = run("submit", "work", "--force", "--db", f"sqlite:///{typo}")
    assert_one_line_error(result, "no Shoal datastore")
    assert not typo.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--delay-s", "3e11"], "delay_s must be at most"),
        (["--delay-s", "1e300"], "delay_s must be at most"),
    ],
)
def test_a_delay_past_a_century_is_refused(sqlite_url: str, args: list[str], needle: str) -> None:
    assert_one_line_error(run("submit", "work", "--force", "--db", sqlite_url, *args), needle)
    assert job_total(sqlite_url) == 0


@pytest.mark.parametrize("name", ["", "t" * 201])
def test_a_task_name_nobody_could_read_is_refused(sqlite_url: str, name: str) -> None:
    assert_one_line_error(run("submit", name, "--force", "--db", sqlite_url), "a task name")
    assert job_total(sqlite_url) == 0


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_a_node_id_beyond_64_bits_names_no_node(sqlite_url: str, command: str) -> None:
    result = run(command, "99999999999999999999999", "--db", sqlite_url)
    assert_one_line_error(result, "99999999999999999999999")


def test_an_empty_datastore_url_is_refused() -> None:
    assert_one_line_error(run("status", "--db", ""), "the datastore URL is empty")


def test_job_shows_times_as_dates_and_when_a_delayed_job_is_due(sqlite_url: str) -> None:
    job_id = run("submit", "work", "--force", "--delay-s", "3600", "--db", sqlite_url).stdout
    shown = run("job", job_id.strip(), "--db", sqlite_url).stdout
    assert re.search(r"created_at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(.* ago\)", shown), shown
    assert re.search(r"run_after: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 5\dm", shown), shown
    raw = json.loads(run("job", job_id.strip(), "--json", "--db", sqlite_url).stdout)
    assert isinstance(raw["run_after"], float)


def test_node_logs_escape_what_a_submitter_wrote(sqlite_cluster: Cluster) -> None:
    """A job's error is the submitter's text: it must neither forge a log line nor reach the
    operator's terminal as control sequences."""
    cluster = sqlite_cluster
    cluster.start("n1", lease_s=30)
    hostile = "oops\n2026-01-01 00:00:00,000 INFO    shoal.node: FORGED \x1b[2J\x07"
    out = shoal("submit", "complain", "--args", json.dumps([hostile]), "--db", cluster.url)
    assert out.returncode == 0, out.stderr
    until(lambda: "FORGED" in cluster.log("n1"), 30, "the failure to be logged")
    logs = cluster.log("n1")
    assert "\x1b" not in logs and "\x07" not in logs
    assert not any(line.startswith("2026-01-01") for line in logs.splitlines())
    assert "oops\\x0a2026-01-01" in logs


def test_the_demo_refuses_a_datastore_that_holds_jobs(sqlite_url: str) -> None:
    run("submit", "work", "--force", "--db", sqlite_url)
    result = run("demo", "--db", sqlite_url, "--nodes", "1", "--jobs", "1")
    assert result.exit_code == 2
    assert "the demo needs a datastore of its own" in result.output
    assert job_total(sqlite_url) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--token", "   "], "--token is blank"),
        (["--host", "999.1.1.1"], "neither an IP address nor a host name"),
        (["--host", "a b/c"], "neither an IP address nor a host name"),
    ],
)
def test_observe_refuses_options_it_could_not_serve_on(
    sqlite_url: str, args: list[str], needle: str
) -> None:
    assert_one_line_error(run("observe", "--db", sqlite_url, *args), needle)


def test_pause_and_resume_say_what_they_did_to_the_node(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    node = store.register_node("n1", "host", 1, 4, ["t"], 30.0)
    store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    said = run("resume", "n1", "--db", sqlite_url).stdout
    assert "is not paused (it is waiting): nothing to resume" in said
    assert "pause requested" in run("pause", "n1", "--db", sqlite_url).stdout
    assert "already pausing" in run("pause", str(node.id), "--db", sqlite_url).stdout
    assert "pause cancelled" in run("resume", "n1", "--db", sqlite_url).stdout
    assert not store.read_node(node.id).pause_requested  # type: ignore[union-attr]
    run("pause", "n1", "--db", sqlite_url)
    store.set_node_state(node.id, NodeState.WAITING, NodeState.PAUSED)
    assert "already paused" in run("pause", "n1", "--db", sqlite_url).stdout
    assert "resume requested" in run("resume", "n1", "--db", sqlite_url).stdout
    store.close()
