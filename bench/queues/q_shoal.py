"""Shoal under the benchmark: nodes run `shoal node --app q_shoal:app`; BENCH_URL is the store.

Runs in Shoal's own environment. The bulk load is one `submit_many` transaction, a single
submit is `Task.submit`, and the stored result is read back with `JobHandle.wait`.
"""

from __future__ import annotations

import os
from typing import Any

import drive
import stamps

from shoal import App
from shoal.app import JobHandle

app = App(os.environ.get("BENCH_URL"))


@app.task(name="echo", retries=0)
def echo(index: int) -> int:
    return stamps.echo(index)


class Queue:
    def open(self) -> None:
        return None

    def prepare(self) -> None:
        app.store.now()  # the harness ran `shoal init`; this only proves the store answers

    def submit(self, index: int) -> JobHandle:
        return echo.submit(index)

    def submit_bulk(self, first: int, count: int) -> None:
        echo.submit_many([(index,) for index in range(first, first + count)])

    def result(self, handle: JobHandle, timeout_s: float) -> Any:
        return handle.wait(timeout_s)

    def close(self) -> None:
        app.close()


if __name__ == "__main__":
    drive.main(Queue)
