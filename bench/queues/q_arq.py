"""arq under the benchmark: asyncio workers on Redis, with their default settings.

Workers run as `arq q_arq.WorkerSettings`, two processes, each running up to 10 jobs at once
and polling the queue every 0.5 s (arq's defaults). arq has no bulk enqueue, so the bulk load is
one `enqueue_job` per job; results are kept in Redis by arq and read back with `Job.result`.
"""

from __future__ import annotations

import os
from typing import Any

import drive
import stamps
from arq import create_pool
from arq.connections import RedisSettings
from arq.jobs import Job

REDIS = RedisSettings.from_dsn(os.environ["BENCH_URL"])


async def echo(ctx: dict[str, Any], index: int) -> int:
    return stamps.echo(index)


class WorkerSettings:
    functions = [echo]
    redis_settings = REDIS


class Queue:
    async def open(self) -> None:
        self.pool = await create_pool(REDIS)

    def prepare(self) -> None:
        return None

    async def submit(self, index: int) -> Job | None:
        return await self.pool.enqueue_job("echo", index)

    async def submit_bulk(self, first: int, count: int) -> None:
        for index in range(first, first + count):
            await self.pool.enqueue_job("echo", index)

    async def result(self, handle: Job, timeout_s: float) -> Any:
        return await handle.result(timeout=timeout_s)

    async def close(self) -> None:
        await self.pool.aclose()


if __name__ == "__main__":
    drive.main(Queue)
