"""An app that cannot be imported while the file named by FRAGILE_FLAG exists: a worker process
started then fails to load it, as after a deploy that broke the code under a running node."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shoal import App

flag = os.environ.get("FRAGILE_FLAG")
if flag and Path(flag).exists():
    raise ImportError(f"{flag} says this app is broken")

app = App()


@app.task(retries=0)
def noop() -> int:
    return 0


@app.task(retries=0)
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"
