"""The observer's web server: pages, JSON API, event stream, metrics and liveness in one app.

`create_app` wires a `Store` into a FastAPI app; `serve` opens the datastore named by a URL and
runs the app with uvicorn until Ctrl-C. The observer never registers as a node and never writes.
It binds to loopback unless given a token, because it shows job arguments and results, and it
answers only the Host names it serves (`served_hosts`), so a page using DNS rebinding reads nothing.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from shoal.errors import ConfigError
from shoal.observer.api import api_router
from shoal.observer.head import HeadAsGet
from shoal.observer.hosts import ANY_HOST, LOCAL_HOSTS, AllowedHosts, host_form
from shoal.observer.metrics import metrics_registry, render_metrics
from shoal.observer.pages import page_router
from shoal.observer.security import Guard, Sessions
from shoal.store import open_store
from shoal.store.port import Store

STATIC = Path(__file__).parent / "static"
TOKEN_ENV = "SHOAL_OBSERVER_TOKEN"
ALLOWED_HOSTS_ENV = "SHOAL_OBSERVER_ALLOWED_HOSTS"
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", "[::]", ""})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def create_app(
    store: Store, token: str | None, allowed_hosts: Sequence[str] = LOCAL_HOSTS
) -> FastAPI:
    """The observer app over `store`; with `token`, everything but /livez needs it. HEAD is
    answered wherever GET is.

    Requests whose Host is not in `allowed_hosts` get 421. The default is the loopback names on
    any port plus TestClient's `testserver`; `serve` passes the names it actually serves. Raises
    ConfigError for a malformed entry.
    """
    hosts = AllowedHosts.of(allowed_hosts)
    sessions = Sessions()
    app = FastAPI(
        title="Shoal observer",
        summary="A read-only view of a Shoal cluster and its history.",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the interactive docs load third-party scripts; the JSON is enough
        redoc_url=None,
    )
    registry = metrics_registry(store)
    # Set by the server on shutdown; open event streams watch it and end.
    app.state.stopping = threading.Event()

    @app.get("/livez", response_class=PlainTextResponse, tags=["health"])
    def livez() -> str:
        """The process is up. Does not touch the datastore, so it never needs a token."""
        return "ok\n"

    @app.get("/metrics", response_class=Response, tags=["metrics"])
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(render_metrics(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api_router(store, app.state.stopping))
    app.include_router(page_router(store, token, sessions))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, token=token, sessions=sessions, allowed_hosts=hosts)
    app.add_middleware(HeadAsGet)  # added last, so outermost: HEAD passes the Guard as GET does
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_hosts(host: str, port: int, extra: Sequence[str]) -> list[str]:
    """The Host values an observer bound to `host`:`port` answers.

    The bound address with its port; on loopback also `localhost`, `127.0.0.1` and `[::1]` with
    that port; and every name in `extra` (a name without a port matches any port). Bound to a
    wildcard address the observer cannot know its names: it answers the loopback forms and
    `extra`, or, with no `extra` given, any Host (such a bind always has a token, which a
    rebinding page cannot send).
    """
    names = list(extra)
    if host in WILDCARD_BINDS:
        if not names:
            return [ANY_HOST]
    else:
        names.append(f"{host_form(host)}:{port}")
    if host in WILDCARD_BINDS or is_loopback(host):
        names.extend(f"{name}:{port}" for name in LOOPBACK_NAMES)
    return names


def serve(
    url: str | None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve the observer for the datastore at `url` (None: SHOAL_DB or the default) until Ctrl-C.

    `token` falls back to the SHOAL_OBSERVER_TOKEN environment variable, `allowed_hosts` (extra
    Host names, e.g. a proxy's) to the comma list in SHOAL_OBSERVER_ALLOWED_HOSTS. Raises
    ConfigError for a non-loopback `host` or an allowed host `*` without a token, or a
    malformed host name; and the
    store's errors if the datastore cannot be opened (an observer never creates a datastore).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"refusing to serve on {host} without a token: the observer shows job arguments "
            f"and results; pass --token or set {TOKEN_ENV}, or bind 127.0.0.1"
        )
    extra = list(allowed_hosts) or _split_names(os.environ.get(ALLOWED_HOSTS_ENV, ""))
    if ANY_HOST in extra and token is None:
        raise ConfigError(
            f"refusing --allowed-host {ANY_HOST} without a token: any web page could then read "
            "the observer through DNS rebinding"
        )
    hosts = served_hosts(host, port, extra)
    AllowedHosts.of(hosts)  # a malformed name fails before the datastore is opened
    store = open_store(url, create=False)
    try:
        store.check_schema()
        app = create_app(store, token, hosts)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5
        )
        _check_port_free(host, port)
        print(f"Shoal observer on http://{host_form(host)}:{port}/ for {store.url_for_display}")
        ObserverServer(config, app.state.stopping).run()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how an observer is meant to stop
    finally:
        store.close()


def _check_port_free(host: str, port: int) -> None:
    """ConfigError, before the address is announced, if nothing could listen on host:port."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host_form(host)}:{port}: {exc.strerror}; pick another "
                "--port, or stop what listens there"
            ) from None


def _split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class ObserverServer(uvicorn.Server):
    """uvicorn that also tells open event streams to end when it is asked to stop."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        super().handle_exit(sig, frame)
