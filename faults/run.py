"""`make faults`: the chaos soak and the poison set on each datastore, then the verdict.

    python faults/run.py --seed 1 --minutes 1.5 --datastores sqlite,postgres --jobs 900

Each datastore is fresh (a SQLite file; a throwaway PostgreSQL server the suite may restart).
Prints one summary row per datastore and one row per poison case, and exits 1 when any
invariant fails: lost 0, stuck 0, duplicate outcomes 0, attempts charged without running 0,
SIGKILL -> running elsewhere p99 <= lease + 2 s, every poison job failed with its real cause,
every other job succeeded, no node process exited unexpectedly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from chaosnodes import FaultSuiteError, new_datastore
from poison import POISONS, run_poison
from report import Row, poison_table, summary_table
from soak import FAULT_KINDS, SoakPlan, run_soak


@dataclass(frozen=True)
class SuiteOptions:
    plan: SoakPlan
    datastores: tuple[str, ...]
    poison: tuple[str, ...] | None  # poison kinds to run; None for all, () for none
    json_path: Path | None = None


def run_suite(options: SuiteOptions, work_dir: Path) -> list[Row]:
    """One row per datastore: its soak, then its poison set, on one fresh datastore."""
    rows = []
    for kind in options.datastores:
        datastore = new_datastore(kind)
        try:
            soak = run_soak(datastore, options.plan, work_dir)
            poison = None
            if options.poison != ():
                poison = run_poison(datastore, work_dir, options.plan.lease_s, options.poison)
            rows.append(Row(soak, poison, options.plan.lease_s))
        finally:
            datastore.close()
    return rows


def parse(argv: list[str]) -> SuiteOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=1.5, help="soak time per datastore")
    parser.add_argument("--datastores", default="sqlite,postgres")
    parser.add_argument("--jobs", type=int, default=900, help="steady jobs per datastore")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--fault-every-s", type=float, default=6.0, help="mean gap between faults")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="fault kinds to inject")
    parser.add_argument(
        "--job-s",
        default="0.05,0.6",
        help="range of the steady jobs' durations, seconds (e.g. 0.001,0.008: tiny jobs)",
    )
    parser.add_argument("--poison", default="all", help="poison kinds, 'all' or 'none'")
    parser.add_argument("--json", type=Path, help="also write the verdict here, as JSON")
    args = parser.parse_args(argv)
    faults = tuple(k for k in args.faults.split(",") if k)
    unknown = set(faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    poison: tuple[str, ...] | None = None
    if args.poison == "none":
        poison = ()
    elif args.poison != "all":
        poison = tuple(args.poison.split(","))
        known = {p.kind for p in POISONS}
        if set(poison) - known:
            parser.error(f"unknown poison kinds; known: {', '.join(sorted(known))}")
    try:
        low, high = (float(x) for x in args.job_s.split(","))
    except ValueError:
        parser.error(f"--job-s takes two durations in seconds, low,high (not {args.job_s!r})")
    if not 0 <= low <= high <= 60:
        parser.error(f"--job-s {args.job_s}: want 0 <= low <= high <= 60 seconds")
    plan = SoakPlan(
        args.seed,
        args.minutes,
        args.jobs,
        args.nodes,
        args.lease_s,
        fault_every_s=args.fault_every_s,
        faults=faults,
        job_s=(low, high),
    )
    return SuiteOptions(plan, tuple(args.datastores.split(",")), poison, args.json)


def verdict(rows: list[Row]) -> dict[str, Any]:
    """What a test reads: each datastore's findings, poison cases and broken invariants."""
    return {
        row.soak.datastore: {
            "faults": dict(row.soak.faults),
            "jobs": len(row.soak.submitted),
            "findings": asdict(row.soak.findings) if row.soak.findings else None,
            "poison": [asdict(c) for c in row.poison.cases] if row.poison else [],
            "bystanders_failed": row.poison.bystanders_failed if row.poison else {},
            "exits": [asdict(e) for e in row.soak.exits + (row.poison.exits if row.poison else [])],
            "failures": row.failures(),
        }
        for row in rows
    }


def main(argv: list[str]) -> int:
    options = parse(argv)
    # The suite's own datastore client logs each reconnect through a restart: expected noise.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shoal-faults-") as work:
        try:
            rows = run_suite(options, Path(work))
        except FaultSuiteError as exc:
            print(f"the fault suite could not run: {exc}", file=sys.stderr)
            return 2
    print(f"fault suite, seed {options.plan.seed}, {time.monotonic() - began:.0f}s\n")
    print(summary_table(rows) + "\n")
    if any(r.poison for r in rows):
        print(poison_table(rows) + "\n")
    broken = [line for row in rows for line in row.failures()]
    for line in broken:
        print(f"FAIL {line}")
    print("all invariants held" if not broken else f"{len(broken)} invariants failed")
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(verdict(rows), indent=2))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
