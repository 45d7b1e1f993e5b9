"""Tasks for the system tests, imported by real `shoal node` processes (--app systasks:app)."""

from __future__ import annotations

import os
import time

from shoal import App, Cancelled, cancelled, progress

app = App()


@app.task
def work(n: int, sleep_s: float = 0.0) -> int:
    if sleep_s:
        progress(0.5, "sleeping")
        time.sleep(sleep_s)
    return n * 2


@app.task(retries=2, backoff_s=0.05)
def flaky(n: int) -> int:
    raise RuntimeError(f"flaky {n}")


@app.task
async def double_async(n: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return n * 2


@app.task(retries=1, backoff_s=0.05, timeout_s=0.3)
def hang() -> None:
    while True:
        time.sleep(0.01)


@app.task
def stepped(steps: int, step_s: float) -> str:
    for i in range(steps):
        progress((i + 1) / steps, f"step {i + 1} of {steps}")
        time.sleep(step_s)
    return "done"


@app.task
def burn(n: int) -> int:
    return sum(i * i for i in range(n))


@app.task(retries=0)
def unprintable() -> None:
    raise ValueError("bad \x00 byte and a lone \udcff surrogate")


@app.task(keep_succeeded_s=1.0)
def ephemeral(n: int) -> int:
    """Kept a second once it succeeded: nodes prune it while they drain other work."""
    return n


@app.task(retries=0)
def hold(marker: str, limit_s: float = 60.0) -> str:
    """Run until the file `marker` exists (a long job the test ends when it chooses)."""
    deadline = time.monotonic() + limit_s
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "held"


@app.task(retries=2)
def obedient(limit_s: float) -> str:
    """Stops as soon as its job is asked to cancel; left alone, returns after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cancelled():
            raise Cancelled("stopped between two steps")
        time.sleep(0.01)
    return "never asked"


@app.task(retries=2, cancel_grace_s=1.0)
def deaf(seconds: float) -> str:
    """Ignores a cancel request: its node stops it once the grace has passed."""
    progress(0.5, "not listening")
    time.sleep(seconds)
    return "finished anyway"


@app.task(cancel_grace_s=120.0)
def unheeding(seconds: float) -> str:
    """Ignores a cancel request for longer than a test lasts."""
    time.sleep(seconds)
    return "finished anyway"


@app.task
def stamp(n: int) -> int:
    """The moment it ran, on the host's monotonic clock: one node's run order, read back."""
    return time.monotonic_ns()


@app.task(max_running=2)
def narrow(n: int, sleep_s: float = 0.05) -> int:
    """At most two of these run at once across the cluster, however many nodes there are."""
    time.sleep(sleep_s)
    return n


@app.task
def ticker(path: str, seconds: float) -> str:
    """Appends 'pid time' to `path` every 20 ms for `seconds`: when, and where, it ran."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(path, "a") as out:
            out.write(f"{os.getpid()} {time.time()}\n")
        time.sleep(0.02)
    return "done"


@app.task
def relay(n: int) -> int:
    """Submits `work(n)` from inside a task: to whichever datastore this app uses where it runs."""
    return work.submit(n).id


@app.task(retries=0)
def noted(path: str, n: int, sleep_s: float) -> int:
    """Appends `n` to `path` as its body begins, then sleeps: which jobs ever began."""
    with open(path, "a") as out:
        out.write(f"{n}\n")
    time.sleep(sleep_s)
    return n


@app.task(retries=0)
def complain(message: str) -> None:
    """Fails with the submitter's own words."""
    raise RuntimeError(message)


@app.task(retries=0)
def kill_group() -> None:
    """Sends SIGKILL to its own process group (a task that means to stop 'everything here')."""
    import signal

    os.killpg(0, signal.SIGKILL)
