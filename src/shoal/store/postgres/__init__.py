"""The distributed datastore: PostgreSQL, shared by nodes on any number of hosts.

`store.PostgresStore` implements the port and runs each operation on a pooled connection through
`conn.Connector` (retries through outages, error translation, LISTEN), delegating to plain
functions over the borrowed connection: `jobs` (submit, claim, finish, ...), `nodes` (membership
and rebalancing) and `reads` (what status, the observer and metrics show). `queries` names the
statements as SQLite's `queries` does; `schema` applies the numbered files in `migrations/`.
"""

from shoal.store.postgres.reads import list_jobs_query
from shoal.store.postgres.schema import SCHEMA_VERSION, latest_version, migrations
from shoal.store.postgres.store import PostgresStore

__all__ = ["SCHEMA_VERSION", "PostgresStore", "latest_version", "list_jobs_query", "migrations"]
