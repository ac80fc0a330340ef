"""A client that went away before its request body ended: one quiet line and a 499.

Starlette raises ClientDisconnect from Request.stream(), body() and form() when the HTTP
server says the connection is gone: a `docker push` interrupted, a browser tab closed, a
proxy that gave up. Nothing is wrong with the server and nobody is left to read an answer,
so it is no 500, no traceback and no ERROR line. It is answered 499, nginx's "client closed
request", which is the status the access log and /metrics then show, so a dashboard of
5xx shows only Dockyard's own failures. The answer reaches no one, which is harmless.

Every face registers this one handler: the outer app (/v1, /auth/token, the console) and
the /v2 app, whose own ServerErrorMiddleware would otherwise turn the exception into a 500.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("dockyard.http")
CLIENT_CLOSED_REQUEST = 499


async def client_gone(request: Request, _exc: Exception) -> Response:
    log.info(
        "client went away before its request body ended: %s %s", request.method, request.url.path
    )
    return Response(status_code=CLIENT_CLOSED_REQUEST)
