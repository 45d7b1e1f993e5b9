"""Dramatiq under the benchmark: a Redis broker and Dramatiq's Redis results backend.

Workers run as `dramatiq q_dramatiq --processes 2 --threads 8` (its default thread count).
Dramatiq has no bulk send, so the bulk load is one `send` per message; results are stored by
the Results middleware and read back with `Message.get_result`.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import drive
import stamps
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ["BENCH_URL"]
backend = RedisBackend(url=URL)
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, store_results=True)
def echo(index: int) -> int:
    return stamps.echo(index)


class Queue:
    def open(self) -> None:
        return None

    def prepare(self) -> None:
        return None

    def submit(self, index: int) -> Any:
        return echo.send(index)

    def submit_bulk(self, first: int, count: int) -> None:
        for index in range(first, first + count):
            echo.send(index)

    def result(self, handle: Any, timeout_s: float) -> Any:
        return handle.get_result(backend=backend, block=True, timeout=int(timeout_s * 1000))

    def close(self) -> None:
        broker.close()


if __name__ == "__main__":
    drive.main(Queue)
