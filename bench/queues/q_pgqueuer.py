"""PgQueuer under the benchmark: asyncpg, LISTEN/NOTIFY wake-ups, its default batch size.

`python q_pgqueuer.py worker` runs one worker until SIGTERM, as `pgq run` would (that command
is not used: its logging set-up fails with some versions of its dependencies); two such
processes run. The bulk load is one `Queries.enqueue` with lists (one statement). PgQueuer
records each job's status but not its return value, so no result is read back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import asyncpg
import drive
import stamps
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

URL = os.environ["BENCH_URL"]


async def work() -> None:
    connection = await asyncpg.connect(URL)
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("echo")
    async def echo(job: Job) -> bytes:
        index = int(job.payload or b"0")
        return str(stamps.echo(index)).encode()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    await pgq.run()


class Queue:
    async def open(self) -> None:
        self.connection = await asyncpg.connect(URL)
        self.queries = Queries(AsyncpgDriver(self.connection))

    async def prepare(self) -> None:
        await self.queries.install()

    async def submit(self, index: int) -> Any:
        return await self.queries.enqueue("echo", str(index).encode())

    async def submit_bulk(self, first: int, count: int) -> None:
        payloads: list[bytes | None] = [str(i).encode() for i in range(first, first + count)]
        await self.queries.enqueue(["echo"] * count, payloads, [0] * count)

    def result(self, handle: Any, timeout_s: float) -> Any:
        return None  # not stored by PgQueuer

    async def close(self) -> None:
        await self.connection.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        asyncio.run(work())
    else:
        drive.main(Queue)
