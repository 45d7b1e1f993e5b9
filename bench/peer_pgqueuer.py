"""The PgQueuer side of the benchmark; runs inside bench/.venvs/pgqueuer, never imports Shoal.

`python peer_pgqueuer.py worker` runs one worker with a no-op entrypoint until SIGTERM (as
`pgq run` does; that command is not used because its logging set-up fails with some versions of
its dependencies). For the rest the harness reads one JSON line from stdout: `install` (the
schema), `submit N` (one batch enqueue), `drain N TIMEOUT_S` (wait until N jobs succeeded, from
PgQueuer's own status log) and `latency COUNT INTERVAL_S TIMEOUT_S` (one job every interval,
queued-to-picked delay from the same log, in database time). BENCH_PG_DSN names the database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

ENTRYPOINT = "noop"
READY = "bench worker ready"


async def create_pgqueuer() -> PgQueuer:
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        return None

    return pgq


async def work() -> None:
    pgq = await create_pgqueuer()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    print(READY, flush=True)  # the harness submits once every worker has said this
    await pgq.run()


async def install() -> dict[str, bool]:
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    try:
        await Queries(AsyncpgDriver(connection)).install()
        return {"installed": True}
    finally:
        await connection.close()


async def submit(count: int) -> dict[str, float]:
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    try:
        queries = Queries(AsyncpgDriver(connection))
        started = time.perf_counter()
        await queries.enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)
        return {"seconds": time.perf_counter() - started}
    finally:
        await connection.close()


DRAIN_SQL = """
SELECT count(*) FILTER (WHERE status = 'successful') AS done,
       count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')) AS bad,
       extract(epoch FROM min(created) FILTER (WHERE status = 'picked')) AS first,
       extract(epoch FROM max(created) FILTER (WHERE status = 'successful')) AS last
FROM pgqueuer_log
"""


async def drain(count: int, timeout_s: float) -> dict[str, float | int | None]:
    """Poll the status log until `count` jobs succeeded (or one failed, or time ran out)."""
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            row = await connection.fetchrow(DRAIN_SQL)
            if row["done"] >= count or row["bad"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        left = await connection.fetchval("SELECT count(*) FROM pgqueuer")
        return {
            "done": row["done"],
            "bad": row["bad"],
            "left": left,
            "first": float(row["first"]) if row["first"] is not None else None,
            "last": float(row["last"]) if row["last"] is not None else None,
        }
    finally:
        await connection.close()


LATENCY_SQL = """
SELECT extract(epoch FROM p.created - q.created) AS delay_s
FROM pgqueuer_log q JOIN pgqueuer_log p ON p.job_id = q.job_id AND p.status = 'picked'
WHERE q.status = 'queued' AND q.job_id = ANY($1::bigint[])
"""


async def latency(count: int, interval_s: float, timeout_s: float) -> dict[str, list[float]]:
    """Enqueue one job every `interval_s`; return each job's queued-to-picked delay."""
    connection = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    try:
        queries = Queries(AsyncpgDriver(connection))
        ids: list[int] = []
        next_at = time.monotonic()
        for _ in range(count):
            ids.extend(await queries.enqueue(ENTRYPOINT, None))
            next_at += interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        deadline = time.monotonic() + timeout_s
        rows = []
        while time.monotonic() < deadline:
            rows = await connection.fetch(LATENCY_SQL, ids)
            if len(rows) >= count:
                break
            await asyncio.sleep(0.1)
        return {"delays_s": [float(r["delay_s"]) for r in rows]}
    finally:
        await connection.close()


def main(argv: list[str]) -> None:
    command, numbers = argv[0], [float(a) for a in argv[1:]]
    if command == "worker":
        asyncio.run(work())
        return
    if command == "install":
        result: object = asyncio.run(install())
    elif command == "submit":
        result = asyncio.run(submit(int(numbers[0])))
    elif command == "drain":
        result = asyncio.run(drain(int(numbers[0]), numbers[1]))
    elif command == "latency":
        result = asyncio.run(latency(int(numbers[0]), numbers[1], numbers[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
