"""The one migration loader both dialects share: numbered `.sql` files found by their number.

Each dialect keeps its schema as `NNNN_what.sql` files in its own `migrations/` folder; a
migration's version is its number, and the dialect's schema version is the highest number shipped.
Applying them, and keeping the version bookkeeping, stays with each dialect: SQLite writes
`shoal_meta`, PostgreSQL `shoal_schema`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

MIGRATION_NAME = re.compile(r"(\d{4})_\w+\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name, e.g. 0002_job_counts.sql
    sql: str


def load_migrations(package: str) -> tuple[Migration, ...]:
    """Every migration in `package`'s `migrations/` folder, in version order.

    Raises ValueError if two files carry one number or the numbers leave a gap, since either
    would leave databases at versions no release ever had.
    """
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ValueError(
            f"migrations of {package} are not numbered 1..n: {[m.name for m in found]}"
        )
    return tuple(found)
