"""Access control: loopback by default, a token for anything else, and the login cookie."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from shoal.errors import ConfigError
from shoal.observer import server
from shoal.observer.security import COOKIE_NAME, safe_next
from shoal.observer.server import create_app, is_loopback
from shoal.store import Store

TOKEN = "s3cret-token"


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
