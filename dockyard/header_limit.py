"""One limit on the size of a request's headers, whichever HTTP server runs the app.

granian refuses a header block somewhere between 100 KB and 1 MB, uvicorn with httptools
not at all; nginx's default is 8 KB a line. Every header Dockyard reads (a bearer token
with its scopes, a Basic login, a Range) fits in a few KB, so a block over the limit is a
client's mistake or an attack, answered with 431 before any handler parses it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from dockyard.early_refusal import refuse

# name, ": ", value and CRLF of every line, as they came on the wire
_LINE_OVERHEAD = 4


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + _LINE_OVERHEAD for k, v in scope["headers"])
            if size > self.max_bytes:
                await self._refuse(scope, size, send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, size: int, send: Send) -> None:
        message = f"the request's headers are {size} bytes, more than the {self.max_bytes} allowed"
        # No OCI code is about headers; SIZE_INVALID ("a size does not match") is the nearest.
        await refuse(scope, send, 431, message, "SIZE_INVALID", {"limit": self.max_bytes})
