"""A PgQueuer worker for the scenario benchmark: `python scenario_pgqueuer.py SLOTS`.

Like `q_pgqueuer.py worker`, but the task body may sleep (stamps.echo with BENCH_DURATIONS),
so it runs in a thread (`asyncio.to_thread`, as PgQueuer asks of blocking code). PgQueuer's
per-process cap is `run(max_concurrent_tasks=...)`, jobs picked and not finished, which must be
at least twice the batch size: SLOTS with batches of SLOTS // 2, and 2 (its least) for SLOTS 1.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
import stamps
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from q_pgqueuer import URL


async def work(slots: int) -> None:
    connection = await asyncpg.connect(URL)
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("echo")
    async def echo(job: Job) -> bytes:
        index = int(job.payload or b"0")
        return str(await asyncio.to_thread(stamps.echo, index)).encode()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    cap = max(2, slots)
    await pgq.run(batch_size=cap // 2, max_concurrent_tasks=cap)


if __name__ == "__main__":
    asyncio.run(work(int(sys.argv[1])))
