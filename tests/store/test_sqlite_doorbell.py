"""The SQLite wake-up doorbell: a ring reaches every bound doorbell, and nothing a sender meets in
the folder (nobody waiting, a dead node's socket, a file that is not a socket, no folder at all)
breaks a submit."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from shoal.model import NewJob
from shoal.store.sqlite import SqliteStore
from shoal.store.sqlite.doorbell import MAX_SOCKET_PATH, Doorbell, Ringer, directory_for


def test_a_ring_reaches_every_waiting_doorbell(tmp_path: Path) -> None:
    folder = str(tmp_path / "wake")
    bells = [Doorbell(folder), Doorbell(folder)]
    ringer = Ringer(folder)
    assert ringer.ring("*") == 2
    assert all(bell.wait(2.0) == ["*"] for bell in bells)
    assert bells[0].wait(0.05) == []  # taken: nothing more waits
    for bell in bells:
        bell.close()
    assert ringer.ring() == 0 and os.listdir(folder) == []


def test_a_dead_nodes_socket_is_removed_and_a_foreign_file_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "wake"
    folder.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(folder / "1-dead.sock"))
    dead.close()  # the file stays, as a killed node leaves it
    (folder / "2-foreign.sock").write_text("not a socket")
    ringer = Ringer(str(folder))
    assert ringer.ring() == 0
    assert sorted(os.listdir(folder)) == ["2-foreign.sock"]


def test_ringing_without_a_folder_does_nothing(tmp_path: Path) -> None:
    assert Ringer(str(tmp_path / "missing")).ring() == 0


def test_a_deep_database_path_gets_a_short_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "shoal.db"
    folder = directory_for(str(deep))
    assert len(folder) + 41 <= MAX_SOCKET_PATH
    assert folder == directory_for(str(deep))  # every store on the file agrees
    bell = Doorbell(folder)
    assert Ringer(folder).ring() == 1
    bell.close()


def test_a_submit_wakes_a_waiting_node_and_a_foreign_file_does_not_break_it(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "shoal.db")
    node_store, submitter = SqliteStore(path), SqliteStore(path)
    node_store.initialize()
    folder = Path(directory_for(path))
    folder.mkdir(exist_ok=True)
    (folder / "junk.sock").write_text("")
    assert node_store.supports_wakeups
    assert node_store.wait_for_work(1, 10.0) is True  # binds it: look now, rings were missed
    assert node_store.wait_for_work(1, 0.05) is False  # nothing rang since
    submitter.submit_jobs([NewJob("t", "[]", "{}")])
    started = time.monotonic()
    assert node_store.wait_for_work(1, 10.0) is True
    assert time.monotonic() - started < 1.0
    node_store.close()
    submitter.submit_jobs([NewJob("t", "[]", "{}")])  # its node has gone: still fine
    submitter.close()
    assert [p.name for p in folder.iterdir()] == ["junk.sock"]
