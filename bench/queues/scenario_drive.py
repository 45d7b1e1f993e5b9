"""The scenario benchmark's submitter: `python scenario_drive.py ADAPTER FIRST COUNT [...]`.

Imports an adapter (q_shoal, q_dramatiq, q_pgqueuer, ...) and, from one process with its
connections already open, submits each (FIRST, COUNT) range with the adapter's `submit_bulk`,
one range right after the other. Prints the `stamps.clock()` read just before each submit.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from typing import Any

from stamps import clock


async def _call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _run(module: str, numbers: list[int]) -> dict[str, Any]:
    queue = importlib.import_module(module).Queue()
    await _call(queue.open())
    try:
        submitted: list[float] = []
        for first, count in zip(numbers[::2], numbers[1::2], strict=True):
            submitted.append(clock())
            await _call(queue.submit_bulk(first, count))
        return {"submitted": submitted}
    finally:
        await _call(queue.close())


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_run(sys.argv[1], [int(a) for a in sys.argv[2:]]))))
