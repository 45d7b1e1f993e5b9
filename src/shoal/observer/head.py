"""HEAD is answered wherever GET is: the same status and headers, and no body.

The app's routes declare GET, so `curl -I` and uptime checkers got 405. `HeadAsGet`, the app's
outermost middleware, passes a HEAD request on as a GET, so everything inside it (the Host
check, the token, the security headers, the route) answers as it would a GET, and it sends on
the response's start but none of its body. A streamed response (the event stream) is over once
its first part would be sent: from then on the app hears that the client has gone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

EMPTY_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class HeadAsGet:
    """ASGI middleware: a HEAD request is served as GET, without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def receive_until_ended() -> Message:
            if ended:
                return {"type": "http.disconnect"}
            return await receive()

        async def send_without_body(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if message["type"] == "http.response.body":
                ended = True
                message = EMPTY_END
            await send(message)

        # A copy: the server keeps its own scope, in which the method is still HEAD, and so
        # expects no body after the Content-Length a GET would have had.
        await self.app({**scope, "method": "GET"}, receive_until_ended, send_without_body)
