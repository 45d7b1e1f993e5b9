"""Procrastinate under the benchmark: PostgreSQL through psycopg, LISTEN/NOTIFY wake-ups.

Workers run as `procrastinate --app q_procrastinate.app worker`, two processes with the
default concurrency. The bulk load is `Task.batch_defer_async` (one statement). Procrastinate
records each job's status but not its return value, so no result is read back.
"""

from __future__ import annotations

import os
from typing import Any

import drive
import stamps
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_URL"]))


@app.task(name="echo")
def echo(index: int) -> int:
    return stamps.echo(index)


class Queue:
    async def open(self) -> None:
        await app.open_async()

    async def prepare(self) -> None:
        await app.schema_manager.apply_schema_async()

    async def submit(self, index: int) -> int:
        return await echo.defer_async(index=index)

    async def submit_bulk(self, first: int, count: int) -> None:
        await echo.batch_defer_async(*({"index": i} for i in range(first, first + count)))

    def result(self, handle: int, timeout_s: float) -> Any:
        return None  # not stored by Procrastinate

    async def close(self) -> None:
        await app.close_async()


if __name__ == "__main__":
    drive.main(Queue)
