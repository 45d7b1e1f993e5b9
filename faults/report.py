"""The suite's verdict: the invariants each datastore's run must hold, and the tables it prints.

One row per datastore for the soak and the poison set together, then one row per poison case.
Text from the datastore (errors, names) is shown escaped: the table is data, never markup or
terminal control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger import percentile
from poison import PoisonResult
from soak import SoakResult

SHORT = {
    "sigkill": "kill",
    "sigstop": "stop",
    "terminate": "term",
    "restart-fast": "rst-f",
    "restart-immediate": "rst-i",
}


@dataclass(frozen=True)
class Row:
    soak: SoakResult
    poison: PoisonResult | None
    lease_s: float

    def failures(self) -> list[str]:
        """Every invariant this datastore's run broke, as a sentence; empty when all held."""
        name, f = self.soak.datastore, self.soak.findings
        broken: list[str] = []
        if f is None:
            return [f"{name}: the soak did not finish"]
        checks = [
            (f.lost, "lost"),
            (f.stuck, "stuck"),
            (f.duplicates, "with duplicate outcomes"),
            (f.started_twice, "started more than once beyond retries"),
            (f.not_succeeded, "steady jobs ended without succeeding"),
            (f.charged_jobs, "charged attempts that never ran"),
        ]
        for ids, what in checks:
            if ids:
                broken.append(f"{name}: {len(ids)} jobs {what} (e.g. {_few(ids)})")
        p99 = percentile(f.recovery_s, 99)
        if p99 is not None and p99 > self.lease_s + 2:
            broken.append(f"{name}: SIGKILL -> running elsewhere p99 {p99:.1f}s > lease + 2s")
        if f.unrecovered:
            broken.append(f"{name}: {f.unrecovered} jobs of killed nodes never started again")
        for e in [*self.soak.exits, *(self.poison.exits if self.poison else [])]:
            broken.append(f"{name}: node {e.name!r} exited with code {e.code}: {e.log_tail}")
        if self.poison:
            for c in self.poison.cases:
                if not c.ok:
                    broken.append(f"{name}/{c.pool}: {c.kind} ({c.task!r}) {c.why}")
            for pool, count in self.poison.bystanders_failed.items():
                if count:
                    broken.append(f"{name}/{pool}: {count} bystander jobs did not succeed")
        return broken


def _few(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")


def summary_table(rows: list[Row]) -> str:
    head = (
        "datastore",
        "jobs",
        "faults",
        "lost",
        "stuck",
        "dup",
        "started>1",
        "charged unrun",
        "recovery p50/p99",
        "poison ok",
        "bystanders failed",
        "node exits",
    )
    lines = [head]
    for row in rows:
        f = row.soak.findings
        faults = ", ".join(f"{SHORT.get(k, k)} {n}" for k, n in sorted(row.soak.faults.items()))
        p50, p99 = (percentile(f.recovery_s, q) if f else None for q in (50, 99))
        cases = row.poison.cases if row.poison else []
        lines.append(
            (
                row.soak.datastore,
                str(len(row.soak.submitted)),
                faults or "none",
                _count(f.lost if f else None),
                _count(f.stuck if f else None),
                _count(f.duplicates if f else None),
                _count(f.started_twice if f else None),
                str(f.charged_unrun) if f else "?",
                f"{_s(p50)} / {_s(p99)}",
                f"{sum(c.ok for c in cases)}/{len(cases)}" if row.poison else "-",
                str(sum(row.poison.bystanders_failed.values())) if row.poison else "-",
                str(len(row.soak.exits) + (len(row.poison.exits) if row.poison else 0)),
            )
        )
    return markdown(lines)


def poison_table(rows: list[Row]) -> str:
    lines = [("datastore", "pool", "kind", "task", "state", "error", "verdict")]
    for row in rows:
        for c in row.poison.cases if row.poison else []:
            lines.append(
                (
                    row.soak.datastore,
                    c.pool,
                    c.kind,
                    _text(c.task, 24),
                    c.state,
                    _text(c.error, 60),
                    "ok" if c.ok else f"FAIL: {c.why}",
                )
            )
    return markdown(lines)


def _count(ids: list[int] | None) -> str:
    return "?" if ids is None else str(len(ids))


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _text(value: str, width: int) -> str:
    """Escaped (no control characters, no markup pipes) and cut to `width`."""
    shown = ascii(value)[1:-1].replace("|", "\\|")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def markdown(lines: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
