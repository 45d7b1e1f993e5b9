"""A host the tests can make vanish: a network namespace joined to this one by a veth pair.

A server started inside the namespace listens on its end of the pair. Setting that end down
cuts the host off silently, as power loss or a network partition would: packets sent to it are
dropped and nothing answers, not even with a TCP reset, so open connections just stop getting
acknowledgements. Names and the /30 subnet are random, so parallel runs cannot collide; the
namespace and the pair are deleted on exit whatever happened. Creating them needs root.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from pgutil import IN_CI

POOL = ipaddress.IPv4Network("10.213.0.0/16")  # private; carved into /30s, one per host


@dataclass(frozen=True)
class Host:
    netns: str
    address: str  # the namespace's end of the pair: the vanishing host
    peer: str  # this namespace's end, where the host's clients connect from
    _device: str  # the namespace's end of the pair

    def cut(self) -> None:
        """The host vanishes: its link goes down without a word to anyone connected."""
        ip("netns", "exec", self.netns, "ip", "link", "set", self._device, "down")

    def restore(self) -> None:
        ip("netns", "exec", self.netns, "ip", "link", "set", self._device, "up")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def unused_subnet() -> ipaddress.IPv4Network:
    shown = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    while True:
        subnet = random.choice(list(POOL.subnets(new_prefix=30)))
        if not any(str(address) in shown for address in subnet):
            return subnet


@contextmanager
def vanishing_host() -> Iterator[Host]:
    """A fresh namespace with a link up; skips loudly where namespaces cannot be made (not
    root), except with CI=true, which runs as root and so fails instead."""
    token = secrets.token_hex(4)
    netns, outer, inner = f"shoal-{token}", f"sh{token}o", f"sh{token}i"
    network = unused_subnet()
    peer, address = (str(a) for a in network.hosts())
    try:
        ip("netns", "add", netns)
    except OSError as exc:
        if IN_CI:
            raise
        pytest.skip(f"!!! cannot create a network namespace ({exc}): vanished-host test SKIPPED")
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", netns)
        ip("addr", "add", f"{peer}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("netns", "exec", netns, "ip", "addr", "add", f"{address}/30", "dev", inner)
        ip("netns", "exec", netns, "ip", "link", "set", inner, "up")
        ip("netns", "exec", netns, "ip", "link", "set", "lo", "up")
        yield Host(netns, address, peer, inner)
    finally:
        # Deleting the namespace deletes its end of the pair, and with it the other end.
        for command in (("netns", "delete", netns), ("link", "delete", outer)):
            try:
                ip(*command)
            except OSError as exc:
                if "Cannot find device" not in str(exc):
                    print(f"clean-up: {exc}")
