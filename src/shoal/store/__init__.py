"""The datastore: the port, a shared core of pure rules under it, and one package per dialect.

`port` is the interface (`Store`) every adapter implements. The core both dialects call inside
their own transactions: `rules` (the rebalance plan, node states at a past moment, the job filter,
counter deltas, the eligible states as SQL), `texts` (what people read: errors, reasons) and
`migrations` (the one loader of numbered `.sql` files). The dialects: `sqlite/` (embedded) and
`postgres/` (distributed), each a `store` class that delegates to plain functions over the open
transaction, a `queries` module with statements named alike, and a `migrations/` folder; each
owns its schema version.

Opening a datastore from its URL:
`sqlite:///relative/path.db` or `sqlite:////absolute/path.db` opens the embedded SQLite store;
`postgresql://...` (or `postgres://...`) opens the PostgreSQL store. Anything else is a
ConfigError that names the accepted forms. The default is `sqlite:///shoal.db`, overridden by the
SHOAL_DB environment variable.
"""

from __future__ import annotations

import os
import re

from shoal.errors import ConfigError
from shoal.store.port import DEFAULT_PARTITIONS, QUARANTINE_AFTER, Store

DEFAULT_URL = "sqlite:///shoal.db"

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_URL",
    "QUARANTINE_AFTER",
    "Store",
    "open_store",
    "redact_url",
    "resolve_url",
]

URL_HELP = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user@host:5432/dbname"
)


def resolve_url(url: str | None) -> str:
    """The URL to use: the one given, else SHOAL_DB, else the SQLite default."""
    return url or os.environ.get("SHOAL_DB") or DEFAULT_URL


# `password=...` in a URL's query or a key=value conninfo string; a quoted value may hold spaces
# and escaped quotes, an unquoted one ends at a space, an & or a quote (the end of a message's
# quoted URL).
_KEY_VALUE_PASSWORD = re.compile(r"""(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&']*)""")
# `scheme://user:password@host`: the password runs to the last @ before the path.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@")


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***, safe for logs and error messages.

    Handles `scheme://user:password@host` URLs, `?password=` in their query, and key=value
    conninfo strings (`host=h password=secret`, quoted or not). Since it only rewrites passwords
    where they appear, it also scrubs an error message that quotes a URL or conninfo string.
    """
    text = _URL_PASSWORD.sub(r"\1:***@", url)
    return _KEY_VALUE_PASSWORD.sub(r"\1***", text)


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open the datastore named by `url` (see module doc).

    With `create`, an embedded SQLite file is created and initialised on first use (zero set-up);
    PostgreSQL schemas are created only by `shoal init`. Raises ConfigError for a malformed URL,
    DatastoreUnavailable when the datastore cannot be reached, SchemaError for a missing schema.
    """
    url = resolve_url(url)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from shoal.store.sqlite import SqliteStore

        return SqliteStore.open(url, create=create)
    if scheme in ("postgresql", "postgres"):
        from shoal.store.postgres import PostgresStore

        return PostgresStore.open(url)
    raise ConfigError(f"unsupported datastore URL {redact_url(url)!r}: {URL_HELP}")
