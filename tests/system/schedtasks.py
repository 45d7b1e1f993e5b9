"""A periodic task for the system tests (--app schedtasks:app): it fires every second."""

from __future__ import annotations

from shoal import App, current_job

app = App()


@app.task(schedule=1, retries=0)
def beat() -> int:
    ctx = current_job()
    return 0 if ctx is None else ctx.job_id
