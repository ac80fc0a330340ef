"""`Connection: close` on an answer given before the request's body was read to its end.

A registry refuses many requests before reading what they carry: a blob pushed without a
token gets its 401 challenge, a manifest over the size limit its 413. The rest of the body
is then still on the connection, so the HTTP server cannot take the next request from it:
granian (hyper) closes it once the answer is out. A client that was not told so sends its
next request, often the token request the 401 asked for, down a dead connection and reads
"Server disconnected without sending a response". Saying `Connection: close` makes it open
a new connection instead, which is what Go's net/http does when it cannot drain a body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CONNECTION = b"connection"


def announces_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class CloseWhenBodyUnread:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # HTTP/2 has no connection header, and ends a stream without closing the connection.
        if (
            scope["type"] != "http"
            or scope.get("http_version") not in ("1.0", "1.1")
            or not announces_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        read_to_end = False

        async def tracking_receive() -> Message:
            nonlocal read_to_end
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                read_to_end = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not read_to_end:
                headers = [h for h in message.get("headers", []) if h[0].lower() != _CONNECTION]
                message = {**message, "headers": [*headers, (_CONNECTION, b"close")]}
            await send(message)

        await self.app(scope, tracking_receive, closing_send)
