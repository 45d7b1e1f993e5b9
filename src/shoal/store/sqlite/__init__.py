"""The embedded datastore: SQLite in WAL mode, for a cluster whose nodes share one host.

`store.SqliteStore` implements the port and runs each operation as one transaction on the file
(`file`), delegating to plain functions over the open cursor: `jobs` (submit, claim, finish, ...),
`nodes` (membership and rebalancing) and `reads` (what status, the observer and metrics show).
`queries` names the statements as PostgreSQL's `queries` does; `schema` applies the numbered
scripts in `migrations/`.
"""

from shoal.store.sqlite.file import path_from_url
from shoal.store.sqlite.schema import SCHEMA_VERSION
from shoal.store.sqlite.store import SqliteStore

__all__ = ["SCHEMA_VERSION", "SqliteStore", "path_from_url"]
