"""Tasks for the system tests, imported by real `shoal node` processes (--app systasks:app)."""

from __future__ import annotations

import time

from shoal import App, progress

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
