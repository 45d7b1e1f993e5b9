"""Tasks for process-pool tests, imported by the pool's worker processes as pooltasks:app."""

from __future__ import annotations

import os
import time

from shoal import App, progress

app = App()


@app.task
def nap(seconds: float) -> str:
    progress(0.0, str(os.getpid()))  # which worker runs it, for a test to signal
    time.sleep(seconds)
    return "rested"
