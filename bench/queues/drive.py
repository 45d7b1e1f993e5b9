"""The submitting side every adapter shares: one command per call, one JSON line of answer.

An adapter (q_shoal.py, q_celery.py, ...) defines a `Queue` with `open()`, `prepare()`,
`submit(index)` (returns a handle), `submit_bulk(first, count)`, `result(handle, timeout_s)` (the
value the system stored, or None if it stores none) and `close()`; any of them may be a
coroutine. It ends with `main(Queue)`. Commands: `prepare`, `bulk FIRST COUNT`,
`paced FIRST COUNT INTERVAL_S`, `singles FIRST COUNT` and `lanes FIRST COUNT LANES` (single
submits from LANES threads at once, or LANES coroutines of one loop for an adapter whose `submit`
is a coroutine). Submit times are read from `stamps.clock()` just before each submit call, so
they compare with the task's own start; the loops are the same for every system.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import threading
from typing import Any

from stamps import clock

RESULTS_CHECKED = 10  # stored results read back per paced run: proof they exist, at little cost


async def _call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def bulk(queue: Any, first: int, count: int) -> dict[str, Any]:
    started = clock()
    await _call(queue.submit_bulk(first, count))
    return {"seconds": clock() - started}


async def paced(queue: Any, first: int, count: int, interval_s: float) -> dict[str, Any]:
    """One submit every `interval_s`; each submit's time; then a sample of stored results."""
    submitted: list[float] = []
    handles: list[Any] = []
    next_at = clock()
    for index in range(first, first + count):
        submitted.append(clock())
        handles.append(await _call(queue.submit(index)))
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - clock()))
    step = max(1, count // RESULTS_CHECKED)
    checked = 0
    for offset in range(0, count, step):
        value = await _call(queue.result(handles[offset], 30.0))
        if value is None:
            break  # this system stores no results
        if value != first + offset:
            raise SystemExit(f"job {first + offset} stored result {value!r}")
        checked += 1
    return {"submitted": submitted, "results_checked": checked}


async def singles(queue: Any, first: int, count: int) -> dict[str, Any]:
    """Submit `count` jobs one call at a time from this one thread, as fast as it goes."""
    started = clock()
    for index in range(first, first + count):
        await _call(queue.submit(index))
    return {"seconds": clock() - started}


async def lanes(queue: Any, first: int, count: int, lanes: int) -> dict[str, Any]:
    """Submit `count` jobs one call at a time from `lanes` threads at once (coroutines, for an
    asyncio adapter), each taking every `lanes`-th index, as fast as they go."""
    parts = [range(first + k, first + count, lanes) for k in range(lanes)]
    if inspect.iscoroutinefunction(queue.submit):

        async def lane(indices: range) -> None:
            for index in indices:
                await queue.submit(index)

        started = clock()
        await asyncio.gather(*(lane(part) for part in parts))
        return {"seconds": clock() - started}
    errors: list[BaseException] = []

    def work(indices: range) -> None:
        try:
            for index in indices:
                queue.submit(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(part,)) for part in parts]
    started = clock()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {"seconds": clock() - started}


async def _run(queue_type: Any, argv: list[str]) -> object:
    command, numbers = argv[0], [float(a) for a in argv[1:]]
    queue = queue_type()
    await _call(queue.open())
    try:
        if command == "prepare":
            await _call(queue.prepare())
            return {"prepared": True}
        if command == "bulk":
            return await bulk(queue, int(numbers[0]), int(numbers[1]))
        if command == "paced":
            return await paced(queue, int(numbers[0]), int(numbers[1]), numbers[2])
        if command == "singles":
            return await singles(queue, int(numbers[0]), int(numbers[1]))
        if command == "lanes":
            return await lanes(queue, int(numbers[0]), int(numbers[1]), int(numbers[2]))
        raise SystemExit(f"unknown command {command!r}")
    finally:
        await _call(queue.close())


def main(queue_type: Any) -> None:
    print(json.dumps(asyncio.run(_run(queue_type, sys.argv[1:]))))
