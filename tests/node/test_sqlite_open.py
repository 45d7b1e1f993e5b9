"""Nodes starting together on a new SQLite file: a lock met while the file is being opened and
set up (another process switching it to WAL at that moment) is waited out, never an error."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shoal.store.sqlite import SqliteStore
from shoal.store.sqlite import file as sqlite_file


class LockedAtFirst(sqlite3.Connection):
    """A connection whose first two journal-mode switches find the file locked, as when
    several processes open a new file at the same moment."""

    refusals = 2

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if "journal_mode" in sql and LockedAtFirst.refusals:
            LockedAtFirst.refusals -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().execute(sql, *args)


def test_a_lock_met_while_opening_a_new_file_is_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect = sqlite3.connect

    def connect_locked(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, factory=LockedAtFirst, **kwargs)

    monkeypatch.setattr(sqlite_file.sqlite3, "connect", connect_locked)
    store = SqliteStore.open(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert LockedAtFirst.refusals == 0
        assert store.schema_version()
        assert store.file.run(lambda cur: cur.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    finally:
        store.close()
