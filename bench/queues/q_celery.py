"""Celery under the benchmark: Redis as broker and as result backend.

Workers run as `celery -A q_celery worker --concurrency 2` (prefork: two child processes, the
same worker count as the others). The bulk load is one `delay` per job, which is how Celery
sends many independent tasks; results are read back with `AsyncResult.get`.
"""

from __future__ import annotations

import os
from typing import Any

import drive
import stamps
from celery import Celery

URL = os.environ["BENCH_URL"]
app = Celery("q_celery", broker=URL, backend=URL)


@app.task(name="echo")
def echo(index: int) -> int:
    return stamps.echo(index)


class Queue:
    def open(self) -> None:
        return None

    def prepare(self) -> None:
        return None

    def submit(self, index: int) -> Any:
        return echo.delay(index)

    def submit_bulk(self, first: int, count: int) -> None:
        for index in range(first, first + count):
            echo.delay(index)

    def result(self, handle: Any, timeout_s: float) -> Any:
        return handle.get(timeout=timeout_s)

    def close(self) -> None:
        app.close()


if __name__ == "__main__":
    drive.main(Queue)
