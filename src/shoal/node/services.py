"""A node's housekeeping, done every heartbeat: renew the lease, declare expired nodes dead,
write a cluster sample when one is due, unpark the jobs due within two heartbeats, repair the
assignment now and then, fire the periodic schedules' due ticks (`schedules.Scheduler`) and prune
what retention says is past its age (`retention.Pruner`).

Any live node does the reaping and sampling; the datastore serialises competing attempts, so
no leader is needed. `run_once` is what the loop calls and what tests call directly.
"""

from __future__ import annotations

import logging

from shoal import states
from shoal.assignment import format_section
from shoal.errors import ShoalError
from shoal.model import Heartbeat
from shoal.node.config import NodeConfig
from shoal.node.retention import Pruner
from shoal.node.schedules import Scheduler
from shoal.store import Store

log = logging.getLogger("shoal.node")
REPAIR_EVERY = 10  # heartbeats between checks that the assignment matches membership


class Housekeeping:
    def __init__(
        self,
        store: Store,
        node_id: int,
        config: NodeConfig,
        section: tuple[int, ...] = (),
        pruner: Pruner | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.config = config
        self.turn = 0
        self.section = section
        self.pruner = pruner
        self.scheduler = scheduler

    def run_once(self) -> Heartbeat | None:
        """One round. Returns None if this node has been declared dead (it must stop writing).

        Raises DatastoreUnavailable if the datastore cannot be reached; the caller keeps its
        jobs running and tries again next heartbeat.
        """
        self.turn += 1
        beat = self.store.heartbeat(self.node_id, self.config.lease_s)
        if beat is None:
            return None
        for dead in self.store.mark_dead_nodes():
            log.warning("declared node %d dead (lease expired); its jobs were requeued", dead)
        self.store.record_sample(self.config.sample_interval_s)
        self.store.unpark_due(2 * self.config.heartbeat_s)
        self.fire_schedules(beat)
        if self.pruner is not None:
            try:
                self.pruner.run_once(beat.now)
            except ShoalError as exc:  # pruning can wait; the lease and the jobs cannot
                log.warning("pruning failed (%s); trying again at the next pass", exc)
        if self.turn % REPAIR_EVERY == 0 and self.store.rebalance():
            log.info("repaired the partition assignment")
        if beat.section != self.section:
            log.info(
                "section now %d partitions: %s (epoch %d)",
                len(beat.section),
                format_section(beat.section),
                beat.epoch,
            )
            self.section = beat.section
        return beat

    def fire_schedules(self, beat: Heartbeat) -> None:
        """Fire due ticks at the heartbeat's datastore time, while this node may take work: a
        node asked to pause leaves them to the others."""
        if self.scheduler is None or beat.pause_requested:
            return
        if beat.state not in states.SECTION_STATES:
            return
        try:
            self.scheduler.run_once(beat.now, beat.section)
        except ShoalError as exc:  # a tick can wait a heartbeat; the lease and the jobs cannot
            log.warning("firing schedules failed (%s); trying again at the next heartbeat", exc)
