"""Shoal: a distributed job queue.

Processor nodes share one datastore (SQLite embedded, PostgreSQL distributed); each job gets a
sequential id whose partition decides which node runs it. The public API is re-exported here.
"""

from shoal.app import MAX_KEY_CHARS, MAX_PRIORITY, MIN_PRIORITY, App, JobHandle, Progress, Task
from shoal.context import cancelled, current_job, progress
from shoal.errors import (
    Cancelled,
    ConfigError,
    DatastoreUnavailable,
    JobFailed,
    NodeNameTaken,
    NotFound,
    PayloadError,
    Retry,
    SchemaError,
    ShoalError,
    SubmitError,
    TaskDeclarationError,
    UnknownTask,
    WaitTimeout,
)
from shoal.model import CancelResult, Job, JobState, NodeRecord, NodeState, TaskLimit
from shoal.store.rules import Retention

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "App",
    "CancelResult",
    "Cancelled",
    "ConfigError",
    "DatastoreUnavailable",
    "Job",
    "JobFailed",
    "JobHandle",
    "JobState",
    "NodeNameTaken",
    "NodeRecord",
    "NodeState",
    "NotFound",
    "PayloadError",
    "Progress",
    "Retention",
    "Retry",
    "SchemaError",
    "ShoalError",
    "SubmitError",
    "Task",
    "TaskDeclarationError",
    "TaskLimit",
    "UnknownTask",
    "WaitTimeout",
    "cancelled",
    "current_job",
    "progress",
]
