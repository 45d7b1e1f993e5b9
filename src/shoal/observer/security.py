"""The observer's guard: the Host check, security headers on every response, and the token.

Every request must name, in its `Host` header, a host the observer serves (`hosts.py`); anything
else is a page reached by DNS rebinding or a misrouted proxy, and gets 421 before the app or the
datastore sees it. With a token, every path except `/livez`, `/login`, `/logout` and the static
files needs either an `Authorization: Bearer <token>` header or a live session cookie. Each login
starts its own random session, kept in memory until it expires or the user logs out; the cookie
is HttpOnly, SameSite=Strict, has a Max-Age and is Secure when the login came over TLS. Browsers
asking for a page are sent to the login form; API clients get 401 with `WWW-Authenticate`.
Every response, an unhandled exception's 500 included, carries the same security headers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import quote

from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.observer.hosts import AllowedHosts

COOKIE_NAME = "shoal_observer"
OPEN_PATHS = frozenset({"/livez", "/login", "/logout"})
OPEN_PREFIXES = ("/static/",)
SESSION_LIFETIME_S = 12 * 3600.0  # a working day: long enough not to nag, short enough to end
MAX_SESSIONS = 10_000  # only token holders can log in; this bounds what a script of logins costs

# No inline script or style anywhere: every script and stylesheet is a file under /static.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def is_token_valid(token: str, given: str) -> bool:
    return hmac.compare_digest(token.encode(), given.encode())


def safe_next(path: str | None) -> str:
    """Where to go after login: a local path only, never another site (`//evil`, `/\\evil`)."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")):
        return "/"
    return path


class Sessions:
    """Login sessions in memory: a random id per login, live until it expires or is ended.

    Only a digest of each id is kept, so a lookup's timing says nothing about live ids. A restart
    ends every session (users log in again). Past `max_sessions` the oldest session ends first.
    """

    def __init__(
        self,
        lifetime_s: float = SESSION_LIFETIME_S,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[bytes, float] = {}  # digest -> expiry; insertion order is age order

    def start(self) -> str:
        """A new session's id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._drop_expired(now)
            while len(self._expiry) >= self.max_sessions:
                del self._expiry[next(iter(self._expiry))]
            self._expiry[_digest(session_id)] = now + self.lifetime_s
        return session_id

    def is_live(self, session_id: str) -> bool:
        with self._lock:
            expiry = self._expiry.get(_digest(session_id))
        return expiry is not None and self._clock() < expiry

    def end(self, session_id: str) -> None:
        """Ends the session; an unknown or expired id is ignored."""
        with self._lock:
            self._expiry.pop(_digest(session_id), None)

    def _drop_expired(self, now: float) -> None:
        for digest, expiry in list(self._expiry.items()):
            if expiry > now:
                break  # every later session expires later still
            del self._expiry[digest]


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def session_cookie(headers: Headers) -> str | None:
    """The session id the request's Cookie header carries, if any."""
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is just no session
        return None
    morsel = cookie.get(COOKIE_NAME)
    return None if morsel is None else morsel.value


def set_session_cookie(
    response: Response, session_id: str, lifetime_s: float, secure: bool
) -> None:
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=int(lifetime_s),
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )


def clear_session_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE_NAME, httponly=True, samesite="strict", secure=secure, path="/")


class Guard:
    """ASGI middleware: checks the Host, adds the security headers and, with a token, enforces it.

    It is the app's outermost middleware but sits inside Starlette's error handler, so it answers
    an unhandled exception's 500 itself (then re-raises, so the error is still logged).
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        sessions: Sessions,
        allowed_hosts: AllowedHosts,
    ) -> None:
        self.app = app
        self.token = token
        self.sessions = sessions
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        headers = Headers(scope=scope)
        if not self.allowed_hosts.allows(headers.get("host")):
            body = b"this observer does not serve that host name (see --allowed-host)\n"
            await _send_body(send_with_headers, 421, b"text/plain; charset=utf-8", body)
        elif not self._is_allowed(scope["path"], headers):
            await self._refuse(scope, headers, send_with_headers)
        else:
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception:
                if not started:
                    body = b"internal error\n"
                    await _send_body(send_with_headers, 500, b"text/plain; charset=utf-8", body)
                raise

    def _is_allowed(self, path: str, headers: Headers) -> bool:
        if self.token is None:
            return True
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and is_token_valid(self.token, given.strip()):
            return True
        session_id = session_cookie(headers)
        return session_id is not None and self.sessions.is_live(session_id)

    async def _refuse(self, scope: Scope, headers: Headers, send: Send) -> None:
        path: str = scope["path"]
        if "text/html" in headers.get("accept", "") and not path.startswith("/api/"):
            query = scope.get("query_string", b"").decode("latin-1")
            target = quote(path + (f"?{query}" if query else ""), safe="")
            extra = [(b"location", f"/login?next={target}".encode())]
            await _send_body(send, 303, b"text/plain; charset=utf-8", b"", extra)
        else:
            extra = [(b"www-authenticate", b'Bearer realm="shoal-observer"')]
            body = b'{"detail":"a bearer token is required"}'
            await _send_body(send, 401, b"application/json", body, extra)


async def _send_body(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
