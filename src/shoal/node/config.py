"""A node's settings, with the defaults a user gets from `shoal node`."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field

from shoal.errors import ConfigError


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


POOLS = ("thread", "inline", "process")
MAX_LEASE_S = 3600.0  # a node silent for an hour is dead by any measure


@dataclass(frozen=True)
class NodeConfig:
    name: str = field(default_factory=default_name)
    concurrency: int = 4
    # "thread": worker threads in one worker process, so that a task that kills its process
    # (os._exit, a segfault) cannot take the node down; "inline": worker threads in the node's
    # own process (the only choice for a node not given its app as 'module:attribute');
    # "process": a worker process per slot, for CPU-bound tasks.
    pool: str = "thread"
    lease_s: float = 5.0  # declared dead this long after its last heartbeat
    heartbeat_s: float = 1.0
    poll_s: float = 0.02  # how often an idle node looks for work (without notifications)
    notified_poll_s: float = 1.0  # the fallback poll when the datastore sends wake-ups
    # The longest an idle node waits between looks while its app declares a rate limit: a rate
    # window reopens as time passes, which no wake-up announces.
    rate_poll_s: float = 0.25
    grace_s: float = 30.0  # how long SIGTERM waits for in-flight jobs before releasing them
    idle_grace_s: float = 1.0  # idle this long before working -> waiting (no flapping per job)
    progress_flush_s: float = 0.25
    # Short jobs are claimed ahead, so each claim and each finish write covers many of them:
    # a node holds at most about this many seconds of work beyond its running attempts.
    prefetch_budget_s: float = 0.05
    max_prefetch: int = 1024
    # A job claimed ahead that no worker has started after this long goes back to the queue,
    # where a node with a free slot can take it (the estimate behind the prefetch was wrong:
    # the running jobs turned out slower than those before them).
    max_unstarted_wait_s: float = 0.25
    # Jobs claimed ahead are `claimed` (no attempt charged) until a worker is free, and then
    # started: recorded running, then handed over. Tiny jobs, those expected to take at most
    # this long, go to the workers as they are claimed, beyond the free ones, still `claimed`:
    # a worker then never idles for the node's next write. The start of each is recorded when
    # it has begun: with its outcome, in the same statement, or on its own once it has run
    # this long. So no job shows `running`, or is charged an attempt, before a worker began it.
    # (With tasks in the node's own process, tiny jobs start as they are claimed instead: see
    # `NodeLoop.sizing`.)
    start_ahead_s: float = 0.02
    sample_interval_s: float = 5.0
    # How often the node checks what the datastore has running under it, besides right after
    # every datastore interruption (see node/reconcile.py).
    reconcile_s: float = 60.0
    max_backoff_s: float = 300.0
    # How often a node with an idle worker checks whether jobs waiting behind busy nodes should
    # move to it (sections that follow the load; see shoal/load.py). 0 turns it off.
    load_check_s: float = 0.25
    # How often a node running jobs asks whether any of them was asked to cancel: one probe of
    # an index that holds only the jobs being cancelled, so a request takes effect within about
    # this long on any datastore, without a channel of its own.
    cancel_check_s: float = 0.25
    # How often a node with an idle worker looks for jobs that wait in other sections for a
    # task their owner does not register and this node does (old and new nodes side by side
    # in a rolling deploy). 0 turns it off.
    stranded_check_s: float = 1.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.pool not in POOLS:
            raise ConfigError("--pool must be 'thread', 'inline' or 'process'")
        if not self.name or len(self.name) > 200:
            raise ConfigError("a node name must be 1 to 200 characters")
        try:
            self.name.encode()
        except UnicodeEncodeError:
            shown = self.name.encode(errors="backslashreplace").decode()
            raise ConfigError(f"the node name '{shown}' is not valid UTF-8 text") from None
        # A lease that never runs out would keep a dead node's section, and its jobs, for ever.
        if not (math.isfinite(self.lease_s) and 0 < self.lease_s <= MAX_LEASE_S):
            raise ConfigError(
                f"the lease must be a finite number of seconds up to {MAX_LEASE_S:.0f}, "
                f"not {self.lease_s}"
            )
        if not (math.isfinite(self.grace_s) and self.grace_s >= 0):
            raise ConfigError(f"the grace must be a finite number of seconds, not {self.grace_s}")
        if not self.cancel_check_s > 0:
            raise ConfigError("cancel_check_s must be above 0 seconds")
        if self.heartbeat_s * 2 > self.lease_s:
            raise ConfigError("the lease must be at least two heartbeats long")
