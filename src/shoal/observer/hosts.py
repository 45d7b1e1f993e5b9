"""Which `Host` values the observer answers: the names it serves, none a rebinding page sends.

A page on `evil.example` whose DNS answer turns into 127.0.0.1 reaches a loopback observer with
`Host: evil.example`; refusing unknown hosts keeps such a page from reading jobs. Entries are
`name` (any port) or `name:port`, compared case-insensitively; `*` matches every host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from shoal.errors import ConfigError

HOST_NAME = re.compile(r"[a-z0-9_.-]{1,253}")  # lower case: split_host folds case first
ANY_HOST = "*"  # matches every Host: for a wildcard bind, where the token is the guard
# What TestClient sends, and the loopback names on any port: enough for tests and local use,
# and names a rebinding page cannot make a browser send.
LOCAL_HOSTS = ("testserver", "localhost", "127.0.0.1", "[::1]")


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header or allowed-host entry as (lower-case name, port or None); None if malformed.

    IPv6 literals keep their brackets (`[::1]:8765`); a bare IPv6 address is malformed, as it is
    in a Host header.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not name or not is_host_name(name):
        return None
    if not rest:
        return name, None
    port = rest.removeprefix(":")
    if rest == port or not port.isdigit() or len(port) > 5:
        return None
    return name, int(port)


def is_host_name(name: str) -> bool:
    """A DNS name (letters, digits, `-`, `_`, `.`), an IPv4 address, or a bracketed IPv6 one;
    not dotted numbers that are no address, such as 999.1.1.1."""
    if name.startswith("["):
        try:
            return ipaddress.ip_address(name[1:-1]).version == 6
        except ValueError:
            return False
    if HOST_NAME.fullmatch(name.lower()) is None:
        return False
    if all(label.isdigit() for label in name.rstrip(".").split(".")):
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
    return True


def host_form(address: str) -> str:
    """How a bind address appears in a Host header: IPv6 literals in brackets."""
    bare = address.strip("[]")
    try:
        return f"[{bare}]" if ipaddress.ip_address(bare).version == 6 else bare
    except ValueError:
        return address


@dataclass(frozen=True)
class AllowedHosts:
    """The Host values the observer answers. An entry without a port matches the name on any
    port; `*` matches everything."""

    entries: frozenset[tuple[str, int | None]]
    any_host: bool = False

    @classmethod
    def of(cls, names: Iterable[str]) -> AllowedHosts:
        """Raises ConfigError for an entry that no Host header could match."""
        entries: set[tuple[str, int | None]] = set()
        any_host = False
        for name in names:
            parsed = split_host(name)
            if name.strip() == ANY_HOST:
                any_host = True
            elif parsed is None:
                raise ConfigError(f"not a host name or host:port: {name!r}")
            else:
                entries.add(parsed)
        return cls(frozenset(entries), any_host)

    def allows(self, header: str | None) -> bool:
        if self.any_host:
            return True
        parsed = split_host(header or "")
        if parsed is None:
            return False
        name, port = parsed
        # A browser leaves out the port only when it is the scheme's default.
        ports = {port} if port is not None else {80, 443}
        return (name, None) in self.entries or any((name, p) in self.entries for p in ports)
