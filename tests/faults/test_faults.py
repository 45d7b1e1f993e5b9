"""The fault suite's short run (faults/run.py), seeded, inside the test suite.

Two runs at once: a chaos soak on SQLite and on a throwaway PostgreSQL server with only the
faults today's code survives (SIGKILL, SIGSTOP past the lease, pg_terminate_backend sweeps, a
fast restart), and the poison set on SQLite in both pools. Each poison kind is its own test;
those that wait on a fix are marked xfail(strict=True), so the fix makes them fail until the
mark is taken off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shoal

ROOT = Path(__file__).parents[2]
RUN = ROOT / "faults" / "run.py"
PG_BIN = Path(os.environ.get("SHOAL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
IN_CI = os.environ.get("CI", "").lower() == "true"
HAS_PG = (PG_BIN / "pg_ctl").exists()
LEASE_S = 2.0
# Both runs together take about a minute; twice in some 25 soaks on a loaded machine the SQLite
# cluster stood still for two minutes (writers waiting out LOCK_RETRY_S) and then went on with
# every invariant held, so the bound leaves room for that.
RUN_TIMEOUT_S = 300

SOAK = ["--seed", "7", "--minutes", "0.3", "--jobs", "200", "--fault-every-s", "3"]
SOAK += ["--faults", "sigkill,sigstop,terminate,restart-fast", "--poison", "none"]
SOAK += ["--lease-s", str(LEASE_S)]
POISON = ["--seed", "7", "--minutes", "0", "--datastores", "sqlite", "--lease-s", str(LEASE_S)]

XFAIL: dict[tuple[str, str], str] = {}
KINDS = ("os._exit", "segfault", "kills-its-group", "memory", "c-blocked", "progress-nul")
KINDS += ("progress-surrogate", "deep-result", "nan-result", "hostile-names")


def _env() -> dict[str, str]:
    code = str(Path(shoal.__file__).parents[1])  # the shoal this test imported, first
    inherited = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (code, inherited) if p)}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both runs' verdicts by datastore ("poison" for the poison run), run side by side."""
    if not HAS_PG and IN_CI:
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN} and CI=true")
    out = tmp_path_factory.mktemp("faults")
    datastores = "sqlite,postgres" if HAS_PG else "sqlite"
    runs = {
        "soak": [*SOAK, "--datastores", datastores],
        "poison": POISON,
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(RUN), *args, "--json", str(out / f"{name}.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        for name, args in runs.items()
    }
    try:
        printed = {name: p.communicate(timeout=RUN_TIMEOUT_S)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
    found: dict[str, Any] = {}
    for name in runs:
        path = out / f"{name}.json"
        assert path.exists(), f"the {name} run wrote no verdict:\n{printed[name].decode()}"
        verdict = json.loads(path.read_text())
        found.update(verdict if name == "soak" else {"poison": verdict["sqlite"]})
    yield found


def datastores() -> list[Any]:
    skip = pytest.mark.skip(reason=f"!!! no PostgreSQL binaries in {PG_BIN}: SKIPPED")
    return ["sqlite", pytest.param("postgres", marks=[] if HAS_PG else [skip])]


@pytest.mark.parametrize("datastore", datastores())
def test_soak_loses_nothing_and_records_each_outcome_once(
    verdicts: dict[str, Any], datastore: str
) -> None:
    found = verdicts[datastore]["findings"]
    assert verdicts[datastore]["jobs"] == 200
    for what in ("lost", "stuck", "duplicates", "started_twice", "not_succeeded"):
        unended, endings = found.get("unended"), found.get("endings")
        assert found[what] == [], (
            f"{what}: {found[what]} (attempts with no end: {unended}; how the jobs that did not"
            f" succeed ended: {endings})"
        )
    assert verdicts[datastore]["exits"] == []


@pytest.mark.parametrize("datastore", datastores())
def test_soak_charges_no_attempt_that_never_ran(verdicts: dict[str, Any], datastore: str) -> None:
    """Jobs claimed ahead are charged nothing until a worker is free, and what a killed node
    started but no worker began is given back uncharged by its worker processes."""
    found = verdicts[datastore]["findings"]
    kills = verdicts[datastore]["faults"].get("sigkill", 0)
    assert found["charged_unrun"] == 0, (kills, found["charged_jobs"])


@pytest.mark.parametrize("datastore", datastores())
def test_soak_struck_with_every_fault_kind_it_asked_for(
    verdicts: dict[str, Any], datastore: str
) -> None:
    wanted = {"sigkill", "sigstop"}
    if datastore == "postgres":
        wanted |= {"terminate", "restart-fast"}
    faults = verdicts[datastore]["faults"]
    assert wanted <= {kind for kind, count in faults.items() if count > 0}, faults


@pytest.mark.parametrize("datastore", datastores())
def test_sigkilled_nodes_jobs_start_elsewhere_soon(
    verdicts: dict[str, Any], datastore: str
) -> None:
    """The median within lease + 2 s, and none past a bound that only a recovery waiting on
    something else would pass. This run shares two cores with the rest of `make test`, which
    starves nodes at times; `make faults` holds the p99 to lease + 2 s."""
    found = verdicts[datastore]["findings"]
    times = sorted(found["recovery_s"])
    assert times, "no job was running on a killed node"
    assert times[(len(times) - 1) // 2] <= LEASE_S + 2, times
    assert times[-1] <= 5 * LEASE_S, times
    assert found["unrecovered"] == 0


def poison_params() -> list[Any]:
    params = []
    for pool in ("thread", "process"):
        for kind in KINDS:
            reason = XFAIL.get((pool, kind))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(pytest.param(pool, kind, marks=marks, id=f"{pool}-{kind}"))
    return params


@pytest.mark.parametrize(("pool", "kind"), poison_params())
def test_poison_job_fails_with_its_cause_and_harms_nothing_else(
    verdicts: dict[str, Any], pool: str, kind: str
) -> None:
    cases = [c for c in verdicts["poison"]["poison"] if c["pool"] == pool and c["kind"] == kind]
    assert cases, f"no {kind} case ran in the {pool} pool"
    shown = [(c["task"], c["state"], c["error"], c["why"]) for c in cases]
    assert all(c["ok"] for c in cases), shown
