"""The answer of a middleware that refuses a request before any handler sees it.

Each face has its own error body, and a middleware sits below both: registry clients read
OCI-shaped errors under /v2, everything else the platform's list of sentences. The
connection closes, since what the client was sending is left unread.
"""

from __future__ import annotations

import json

from starlette.types import Scope, Send


async def refuse(
    scope: Scope, send: Send, status: int, message: str, oci_code: str, detail: object
) -> None:
    error: object = message
    if scope["path"] == "/v2" or scope["path"].startswith("/v2/"):
        error = {"code": oci_code, "message": message, "detail": detail}
    body = json.dumps({"errors": [error]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
