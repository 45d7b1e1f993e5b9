"""The observer's guard: security headers on every response and the optional access token.

With a token, every path except `/livez`, the login form and the static files needs either an
`Authorization: Bearer <token>` header or the session cookie that the login form sets. The cookie
holds an HMAC of the token, not the token itself, and is HttpOnly and SameSite=Strict. Browsers
asking for a page are sent to the login form; API clients get 401 with `WWW-Authenticate`.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "shoal_observer"
OPEN_PATHS = frozenset({"/livez", "/login"})
OPEN_PREFIXES = ("/static/",)

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


def session_value(token: str) -> str:
    """What the session cookie holds: proof of the token without the token."""
    return hmac.new(token.encode(), b"shoal-observer-session", hashlib.sha256).hexdigest()


def is_token_valid(token: str, given: str) -> bool:
    return hmac.compare_digest(token.encode(), given.encode())


def safe_next(path: str | None) -> str:
    """Where to go after login: a local path only, never another site (`//evil`, `/\\evil`)."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")):
        return "/"
    return path


class Guard:
    """ASGI middleware: adds the security headers and, with a token, enforces it."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        if self._is_allowed(scope):
            await self.app(scope, receive, send_with_headers)
        else:
            await self._refuse(scope, send_with_headers)

    def _is_allowed(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        headers = Headers(scope=scope)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and is_token_valid(self.token, given.strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is just no session
            return False
        morsel = cookie.get(COOKIE_NAME)
        return (
            morsel is not None
            and self.session is not None
            and (hmac.compare_digest(morsel.value.encode(), self.session.encode()))
        )

    async def _refuse(self, scope: Scope, send: Send) -> None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        wants_page = "text/html" in headers.get("accept", "") and not path.startswith("/api/")
        if wants_page:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            status = 303
            extra = [(b"location", f"/login?next={quote(target, safe='')}".encode())]
            body = b""
        else:
            status = 401
            extra = [(b"www-authenticate", b'Bearer realm="shoal-observer"')]
            body = b'{"detail":"a bearer token is required"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
