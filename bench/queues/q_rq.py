"""RQ under the benchmark: one Redis, the default queue, the default (forking) worker.

Workers run as `rq worker --url BENCH_URL`, two processes; each forks a work horse per job, as
RQ does by default. The bulk load is `Queue.enqueue_many` (one pipeline); results are stored in
Redis by RQ and read back with `Job.latest_result`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import drive
import stamps
from redis import Redis
from rq import Queue as RQueue
from rq.job import Job

URL = os.environ["BENCH_URL"]


def echo(index: int) -> int:
    return stamps.echo(index)


class Queue:
    def open(self) -> None:
        self.queue = RQueue(connection=Redis.from_url(URL))

    def prepare(self) -> None:
        return None

    def submit(self, index: int) -> Job:
        return self.queue.enqueue(echo, index)

    def submit_bulk(self, first: int, count: int) -> None:
        jobs = [RQueue.prepare_data(echo, (index,)) for index in range(first, first + count)]
        self.queue.enqueue_many(jobs)

    def result(self, handle: Job, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            latest = handle.latest_result()
            if latest is not None:
                return latest.return_value
            time.sleep(0.01)
        raise SystemExit(f"RQ job {handle.id} has no result after {timeout_s}s")

    def close(self) -> None:
        self.queue.connection.close()


if __name__ == "__main__":
    # Submit through the module's own name: RQ records `q_rq.echo`, which workers can import,
    # where this file run as a script would record `__main__.echo`.
    import q_rq

    drive.main(q_rq.Queue)
