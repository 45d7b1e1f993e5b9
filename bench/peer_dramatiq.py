"""The Dramatiq side of the benchmark; runs inside bench/.venvs/dramatiq, never imports Shoal.

Workers run as `dramatiq peer_dramatiq --processes 2`. The no-op actor counts its completions in
Redis (one INCR) and the first and last of them note the time: Dramatiq keeps no completion
records of its own without a results backend. The harness calls `python peer_dramatiq.py
COMMAND` and reads one JSON line from stdout: `flush`, `submit N`, `drain N TIMEOUT_S` and
`latency COUNT INTERVAL_S TIMEOUT_S`. BENCH_REDIS_URL names a Redis database used only by the
benchmark (the harness flushes it before and after); BENCH_TOTAL is the drain's job count.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
DONE_KEY, FIRST_KEY, LAST_KEY, DELAYS_KEY = (
    "bench:done",
    "bench:first",
    "bench:last",
    "bench:delays",
)

dramatiq.set_broker(RedisBroker(url=REDIS_URL))
counter = redis.Redis.from_url(REDIS_URL)
total = int(os.environ.get("BENCH_TOTAL", "0"))


@dramatiq.actor(max_retries=0)
def noop() -> None:
    started = time.time()
    done = counter.incr(DONE_KEY)
    if done == 1:
        counter.set(FIRST_KEY, started)
    if done == total:
        counter.set(LAST_KEY, time.time())


@dramatiq.actor(max_retries=0)
def stamp(sent_at: float) -> None:
    counter.rpush(DELAYS_KEY, time.time() - sent_at)


def submit(count: int) -> dict[str, float]:
    started = time.perf_counter()
    for _ in range(count):
        noop.send()
    return {"seconds": time.perf_counter() - started}


def drain(count: int, timeout_s: float) -> dict[str, float | int | None]:
    deadline = time.monotonic() + timeout_s
    while int(counter.get(DONE_KEY) or 0) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    last = counter.get(LAST_KEY)
    first = counter.get(FIRST_KEY)
    return {
        "done": int(counter.get(DONE_KEY) or 0),
        "first": float(first) if first else None,
        "last": float(last) if last else None,
    }


def latency(count: int, interval_s: float, timeout_s: float) -> dict[str, list[float]]:
    """Send one message every `interval_s`; return each one's send-to-start delay."""
    next_at = time.monotonic()
    for _ in range(count):
        stamp.send(time.time())
        next_at += interval_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + timeout_s
    while counter.llen(DELAYS_KEY) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"delays_s": [float(d) for d in counter.lrange(DELAYS_KEY, 0, -1)]}


def flush() -> dict[str, bool]:
    """Empty the benchmark's own Redis database (never any other)."""
    return {"flushed": bool(counter.flushdb())}


def main(argv: list[str]) -> None:
    command, numbers = argv[0], [float(a) for a in argv[1:]]
    if command == "flush":
        result: object = flush()
    elif command == "submit":
        result = submit(int(numbers[0]))
    elif command == "drain":
        result = drain(int(numbers[0]), numbers[1])
    elif command == "latency":
        result = latency(int(numbers[0]), numbers[1], numbers[2])
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
