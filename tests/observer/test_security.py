"""Access control: loopback by default, a token for anything else, the Host check, sessions,
and headers and status codes that hold up under hostile input."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from pydantic import TypeAdapter, ValidationError

from shoal import cli
from shoal.errors import ConfigError
from shoal.observer import server
from shoal.observer.hosts import LOCAL_HOSTS, AllowedHosts
from shoal.observer.params import StoredText, text_problem
from shoal.observer.security import (
    COOKIE_NAME,
    SECURITY_HEADERS,
    SESSION_LIFETIME_S,
    Sessions,
    safe_next,
)
from shoal.observer.server import create_app, is_loopback, served_hosts
from shoal.store import Store, open_store

from cluster import Cluster, submit
from served import ServerThread

TOKEN = "s3cret-token"
TOO_BIG = 2**63
LOOPBACK_FORMS = ["localhost:8765", "127.0.0.1:8765", "[::1]:8765"]


@pytest.fixture
def guarded(obs_store: Store) -> TestClient:
    return TestClient(create_app(obs_store, TOKEN), follow_redirects=False)


@pytest.mark.parametrize("path", ["/api/overview", "/api/jobs", "/metrics", "/api/openapi.json"])
def test_api_needs_the_bearer_token(guarded: TestClient, path: str):
    assert guarded.get(path).status_code == 401
    assert guarded.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get(path, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_livez_needs_no_token(guarded: TestClient):
    response = guarded.get("/livez")
    assert response.status_code == 200 and response.text == "ok\n"


def test_a_browser_is_sent_to_the_login_form_and_back(guarded: TestClient):
    response = guarded.get("/nodes?x=1", headers={"accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fnodes%3Fx%3D1"

    wrong = guarded.post("/login", data={"token": "nope", "next": "/nodes"})
    assert wrong.status_code == 401 and COOKIE_NAME not in wrong.cookies

    right = guarded.post("/login", data={"token": TOKEN, "next": "/nodes?x=1"})
    assert right.status_code == 303 and right.headers["location"] == "/nodes?x=1"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie  # the cookie proves the token without carrying it
    guarded.cookies.set(COOKIE_NAME, right.cookies[COOKIE_NAME])
    assert guarded.get("/nodes").status_code == 200
    assert guarded.get("/api/overview").status_code == 200


def test_login_never_redirects_off_site(guarded: TestClient):
    for target in ["//evil.example/", "https://evil.example/", "/\\evil.example", ""]:
        response = guarded.post("/login", data={"token": TOKEN, "next": target})
        assert response.headers["location"] == "/"
    assert safe_next("/jobs?state=failed") == "/jobs?state=failed"


def test_a_forged_cookie_is_refused(guarded: TestClient):
    guarded.cookies.set(COOKIE_NAME, TOKEN)
    assert guarded.get("/api/overview").status_code == 401


def test_serve_refuses_a_public_bind_without_a_token(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    # The datastore URL is never opened: the refusal comes first.
    with pytest.raises(ConfigError, match="without a token"):
        server.serve("sqlite:////nonexistent/never-opened.db", host="0.0.0.0", port=1)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_there_are_no_write_endpoints(client: TestClient):
    spec_paths = [
        p.replace("{job_id}", "1") for p in client.get("/api/openapi.json").json()["paths"]
    ]
    for path in [*spec_paths, "/", "/partitions", "/nodes", "/timeline", "/jobs", "/jobs/1"]:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert client.request(method, path).status_code == 405, (method, path)


# --- Host header (DNS rebinding) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", ""]
)
def test_an_unknown_host_is_refused_before_any_datastore_read(obs_store: Store, host: str):
    client = TestClient(create_app(obs_store, None))
    obs_store.close()  # any read would now fail: the refusal must come first

    response = client.get("/api/jobs", headers={"host": host})

    assert response.status_code == 421
    assert response.headers["content-type"].startswith("text/plain")
    assert "--allowed-host" in response.text
    assert response.headers["x-frame-options"] == "DENY"


def test_an_unknown_host_is_refused_over_real_http(obs_store: Store):
    with ServerThread(create_app(obs_store, None)) as live:
        assert httpx.get(f"{live.url}/api/overview").status_code == 200
        rebound = httpx.get(f"{live.url}/api/overview", headers={"host": "attacker.example"})
    assert rebound.status_code == 421


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("testserver", True),
        ("127.0.0.1:9999", True),
        ("LOCALHOST", True),
        ("[::1]:80", True),
        ("localhost.evil.example", False),
        ("[::1", False),
        ("127.0.0.1:port", False),
        ("::1", False),
    ],
)
def test_the_default_hosts_are_loopback_and_the_test_client(header: str, allowed: bool):
    assert AllowedHosts.of(LOCAL_HOSTS).allows(header) is allowed


def test_a_loopback_bind_answers_its_port_under_loopback_names():
    hosts = AllowedHosts.of(served_hosts("127.0.0.1", 8765, []))
    assert [hosts.allows(h) for h in ["127.0.0.1:8765", "localhost:8765", "[::1]:8765"]] == [
        True,
        True,
        True,
    ]
    assert not hosts.allows("127.0.0.1:9999")
    assert not hosts.allows("evil.example:8765")
    assert not hosts.allows("testserver")


def test_allowed_host_names_match_any_port_or_the_one_given():
    hosts = AllowedHosts.of(served_hosts("127.0.0.1", 8765, ["obs.example", "proxy.example:8443"]))
    assert hosts.allows("obs.example") and hosts.allows("OBS.example:443")
    assert hosts.allows("proxy.example:8443") and not hosts.allows("proxy.example:9000")


@pytest.mark.parametrize(
    ("bind", "extra", "good", "bad"),
    [
        ("192.168.1.5", [], "192.168.1.5:8765", "localhost:8765"),
        ("::1", [], "[::1]:8765", "[::2]:8765"),
        ("0.0.0.0", ["obs.example"], "obs.example", "192.168.1.5:8765"),
        ("::", ["obs.example"], "localhost:8765", "other.example"),
    ],
)
def test_other_binds_answer_the_bound_or_configured_names(
    bind: str, extra: list[str], good: str, bad: str
):
    hosts = AllowedHosts.of(served_hosts(bind, 8765, extra))
    assert hosts.allows(good) and not hosts.allows(bad)


def test_a_wildcard_bind_without_names_answers_any_host_behind_its_token():
    assert served_hosts("0.0.0.0", 8765, []) == ["*"]
    assert AllowedHosts.of(["*"]).allows("anything.example")


def test_a_malformed_allowed_host_is_refused_before_the_datastore_is_opened():
    with pytest.raises(ConfigError, match="not a host name"):
        server.serve("sqlite:////nonexistent/never-opened.db", allowed_hosts=["bad:host:name"])


def test_serve_refuses_any_host_without_a_token(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match="without a token"):
        server.serve("sqlite:////nonexistent/never-opened.db", allowed_hosts=["*"])


def test_serve_takes_allowed_hosts_from_the_environment(
    obs_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    seen: list[list[str]] = []
    real_create_app = server.create_app

    def recording_create_app(store: Store, token: str | None, hosts: list[str]) -> Any:
        seen.append(hosts)
        return real_create_app(store, token, hosts)

    monkeypatch.setattr(server, "create_app", recording_create_app)
    monkeypatch.setattr(server.ObserverServer, "run", lambda self: None)
    monkeypatch.setattr(server, "_check_port_free", lambda host, port: None)
    monkeypatch.setenv(server.ALLOWED_HOSTS_ENV, "obs.example, proxy.example:8443")

    server.serve(f"sqlite:///{tmp_path / 'observed.db'}", port=8765)

    assert seen == [["obs.example", "proxy.example:8443", "127.0.0.1:8765", *LOOPBACK_FORMS]]


def test_observe_passes_every_allowed_host_to_serve(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(server, "serve", lambda *args: calls.append(args))
    args = ["observe", "--allowed-host", "a.example", "--allowed-host", "b.example:80"]

    result = CliRunner().invoke(cli.cli, args)

    assert result.exit_code == 0, result.output
    assert calls[0][-1] == ("a.example", "b.example:80")


# --- sessions ----------------------------------------------------------------------------------


def login(client: TestClient) -> str:
    response = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert response.status_code == 303
    return str(response.cookies[COOKIE_NAME])


def test_each_login_gets_its_own_session_with_an_expiry(guarded: TestClient):
    first = guarded.post("/login", data={"token": TOKEN, "next": "/"})
    second = guarded.post("/login", data={"token": TOKEN, "next": "/"})

    assert first.cookies[COOKIE_NAME] != second.cookies[COOKIE_NAME]
    cookie = first.headers["set-cookie"]
    assert f"Max-Age={int(SESSION_LIFETIME_S)}" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie


def test_logout_ends_only_that_session(guarded: TestClient):
    mine, theirs = login(guarded), login(guarded)

    guarded.cookies.set(COOKIE_NAME, mine)
    out = guarded.post("/logout")

    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert f'{COOKIE_NAME}=""' in out.headers["set-cookie"]
    assert "Max-Age=0" in out.headers["set-cookie"]
    guarded.cookies.set(COOKIE_NAME, mine)  # a copy kept from before the logout
    assert guarded.get("/api/overview").status_code == 401
    guarded.cookies.set(COOKIE_NAME, theirs)
    assert guarded.get("/api/overview").status_code == 200


def test_the_cookie_is_secure_when_the_login_came_over_tls(obs_store: Store):
    client = TestClient(
        create_app(obs_store, TOKEN), base_url="https://testserver", follow_redirects=False
    )
    response = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert "Secure" in response.headers["set-cookie"]
    assert "Secure" in client.post("/logout").headers["set-cookie"]


def test_a_session_ends_at_its_expiry():
    now = [1000.0]
    sessions = Sessions(lifetime_s=60.0, clock=lambda: now[0])
    session_id = sessions.start()
    now[0] += 59.9
    assert sessions.is_live(session_id)
    now[0] += 0.1
    assert not sessions.is_live(session_id)
    assert not sessions.is_live("never-issued")


def test_sessions_past_the_cap_end_oldest_first():
    sessions = Sessions(max_sessions=2)
    first, second, third = sessions.start(), sessions.start(), sessions.start()
    assert [sessions.is_live(s) for s in (first, second, third)] == [False, True, True]


def test_pages_offer_a_logout_button_only_with_a_token(guarded: TestClient, client: TestClient):
    guarded.cookies.set(COOKIE_NAME, login(guarded))
    assert 'action="/logout"' in guarded.get("/nodes").text
    assert 'action="/logout"' not in guarded.get("/login").text
    assert 'action="/logout"' not in client.get("/nodes").text


# --- 5xx headers and hostile input -------------------------------------------------------------


def test_an_unhandled_error_still_carries_the_security_headers(
    obs_store: Store, monkeypatch: pytest.MonkeyPatch
):
    def broken(job_id: int) -> None:
        raise RuntimeError("the datastore adapter has a bug")

    monkeypatch.setattr(obs_store, "read_job", broken)
    client = TestClient(create_app(obs_store, None), raise_server_exceptions=False)

    response = client.get("/api/jobs/1")

    assert response.status_code == 500
    assert "adapter has a bug" not in response.text
    for name, value in SECURITY_HEADERS:
        assert response.headers[name.decode()] == value.decode()


@pytest.mark.parametrize(
    "url",
    [
        f"/api/jobs/{TOO_BIG}",
        "/api/jobs/-1",
        f"/jobs/{TOO_BIG}",
        "/jobs/-5",
        f"/api/jobs?before_id={TOO_BIG}",
        f"/api/jobs?min_id=-{TOO_BIG * 10}",
        f"/api/jobs?max_id={TOO_BIG}",
        f"/api/jobs?node={TOO_BIG}",
        f"/api/jobs?limit={TOO_BIG}",
        "/api/timeline?since=nan&until=inf",
        "/api/timeline?until=nan",
        "/api/timeline?until=1e300",
        "/api/partitions?at=nan",
        "/api/partitions?at=-inf",
        "/api/jobs/%ff",
        "/api/jobs?state=%fe",
    ],
)
def test_hostile_parameters_get_a_422_with_a_json_body(obs_store: Store, url: str):
    client = TestClient(create_app(obs_store, None), raise_server_exceptions=False)
    response = client.get(url)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


@pytest.mark.parametrize("field", ["min_id", "max_id", "node", "before_id"])
def test_the_job_list_page_says_which_field_is_out_of_range(client: TestClient, field: str):
    response = client.get("/jobs", params={field: str(TOO_BIG)})
    assert response.status_code == 200
    if field != "before_id":  # a paging link, not a form field: ignored like any other junk
        assert f"{field} must be a whole number" in response.text


@pytest.mark.parametrize("task", ["\x00", "a\x00b"])
def test_a_task_no_datastore_can_hold_gets_a_422_from_the_api_and_a_notice_on_the_page(
    store: Store, task: str
):
    [job_id] = submit(store, "resize", "a.png")
    client = TestClient(create_app(store, None), raise_server_exceptions=False)

    api = client.get("/api/jobs", params={"task": task})
    page = client.get("/jobs", params={"task": task})

    assert api.status_code == 422, api.text
    [error] = api.json()["detail"]
    assert error["loc"] == ["query", "task"]
    assert error["msg"] == "text must not contain NUL (\\x00) characters"
    assert page.status_code == 200, page.text
    assert '<p class="notice bad">task must not contain NUL (\\x00) characters</p>' in page.text
    assert f'<a href="/jobs/{job_id}">' in page.text  # the rest of the page still works
    assert "\x00" not in page.text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("resize", None),
        ("naïve ✓", None),
        ("a\x00b", "must not contain NUL (\\x00) characters"),
        ("a\udcffb", "must be valid UTF-8 text (no lone surrogates)"),
    ],
)
def test_only_text_a_datastore_can_hold_is_accepted(text: str, problem: str | None):
    assert text_problem(text) == problem
    if problem is None:
        assert TypeAdapter(StoredText).validate_python(text) == text
    else:
        with pytest.raises(ValidationError) as refused:
            TypeAdapter(StoredText).validate_python(text)
        assert [e["msg"] for e in refused.value.errors()] == [f"text {problem}"]


def test_non_utf8_percent_escapes_get_a_4xx_over_real_http(obs_store: Store, cluster: Cluster):
    cluster.start("alpha")
    submit(obs_store, "resize", "a.png")
    with ServerThread(create_app(obs_store, None)) as live:
        statuses = {
            path: httpx.get(live.url + path).status_code
            for path in ["/jobs/%ff", "/api/jobs/%ff%fe", "/api/jobs?state=%ff", "/%ff"]
        }
        texts = [httpx.get(live.url + p).status_code for p in ["/jobs?task=%ff", "/api/jobs?%ff=1"]]
    assert all(400 <= status < 500 for status in statuses.values()), statuses
    assert texts == [200, 200]


# --- HEAD ------------------------------------------------------------------------------------

HEAD_PATHS = [
    "/livez",
    "/",
    "/partitions?at=nan",
    "/jobs?state=bogus",
    "/jobs/{id}",
    "/jobs/999999",
    "/schedules",
    "/login",
    "/api/overview",
    "/api/jobs/{id}",
    "/api/jobs/0",
    "/api/openapi.json",
    "/metrics",
    "/static/main.js",
]


def comparable(headers: httpx.Headers) -> dict[str, str]:
    """Headers as a GET and a HEAD of the same resource must share them: the body's length (a
    live view may change in between) and the date aside."""
    return {k: v for k, v in headers.items() if k not in ("date", "content-length")}


def test_head_is_answered_wherever_get_is_with_its_status_and_headers(obs_store: Store):
    [job_id] = submit(obs_store, "resize", "a.png")
    with ServerThread(create_app(obs_store, None)) as live:
        for path in HEAD_PATHS:
            url = live.url + path.format(id=job_id)
            got, head = httpx.get(url), httpx.head(url)

            assert head.status_code == got.status_code != 405, path
            assert comparable(head.headers) == comparable(got.headers), path
            assert ("content-length" in head.headers) == ("content-length" in got.headers), path
            assert head.content == b"", path
        assert httpx.head(f"{live.url}/logout").status_code == 405  # POST only: GET gets 405 too
        assert httpx.head(f"{live.url}/livez", headers={"host": "evil.example"}).status_code == 421


def test_head_of_the_event_stream_ends_at_once(obs_store: Store):
    with ServerThread(create_app(obs_store, None)) as live:
        head = httpx.head(f"{live.url}/api/events", timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.headers["x-frame-options"] == "DENY"


def test_head_needs_the_token_as_get_does(guarded: TestClient):
    refused = guarded.head("/api/overview")
    sent_to_login = guarded.head("/nodes", headers={"accept": "text/html"})
    allowed = guarded.head("/api/overview", headers={"authorization": f"Bearer {TOKEN}"})

    assert refused.status_code == 401 and "www-authenticate" in refused.headers
    assert sent_to_login.status_code == 303
    assert sent_to_login.headers["location"] == "/login?next=%2Fnodes"
    assert allowed.status_code == 200 and guarded.head("/livez").status_code == 200
    for response in (refused, sent_to_login, allowed):
        for name, value in SECURITY_HEADERS:
            assert response.headers[name.decode()] == value.decode()


def test_the_app_sends_no_body_for_head(obs_store: Store):
    """Below any server, which might drop a HEAD's body itself: the app sends none."""
    app = create_app(obs_store, None)

    async def request(method: str, path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)
        return sent

    def run(method: str, path: str) -> list[dict[str, Any]]:
        # On a thread of its own: a browser test's event loop may be open on this one.
        with ThreadPoolExecutor(1) as thread:
            return thread.submit(asyncio.run, request(method, path)).result()

    def start(sent: list[dict[str, Any]]) -> tuple[int, list[tuple[bytes, bytes]]]:
        headers = [h for h in sent[0]["headers"] if h[0] != b"content-length"]
        return sent[0]["status"], headers

    for path in ["/livez", "/jobs", "/api/overview", "/static/main.js"]:
        get, head = run("GET", path), run("HEAD", path)
        assert start(head) == start(get) and start(get)[0] == 200, path
        assert [m.get("body", b"") for m in head[1:]] == [b""], path
        assert b"".join(m.get("body", b"") for m in get[1:]), path


@pytest.mark.browser
def test_a_browser_signs_in_and_out_through_the_pages(
    obs_store: Store, cluster: Cluster, page: Any
):
    cluster.start("alpha")
    with ServerThread(create_app(obs_store, TOKEN)) as live:
        page.goto(f"{live.url}/nodes")
        expect(page).to_have_url(f"{live.url}/login?next=%2Fnodes")
        page.fill("input[name=token]", TOKEN)
        page.click("button:has-text('Sign in')")
        expect(page).to_have_url(f"{live.url}/nodes")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "live")

        page.click("button:has-text('Log out')")
        expect(page).to_have_url(f"{live.url}/login")
        page.goto(f"{live.url}/nodes")
        expect(page).to_have_url(f"{live.url}/login?next=%2Fnodes")
    assert page.errors == []


@pytest.mark.parametrize("name", ["a b/c", "evil.example/path", "[not-ipv6]", "x y:80"])
def test_an_allowed_host_that_names_no_host_is_refused(name: str):
    with pytest.raises(ConfigError, match="not a host name"):
        AllowedHosts.of([name])


def test_a_busy_port_is_one_clear_error_before_the_address_is_announced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"sqlite:///{tmp_path / 'observed.db'}"
        open_store(url).close()
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.serve(url, port=port)
    assert "Shoal observer on" not in capsys.readouterr().out
