"""A request id on every request, its answer and every log line written while serving it.

A client's or proxy's `X-Request-ID` is kept when it is a plain token (so one id follows a
request through nginx and Dockyard); anything else, or none, gets a fresh one. Log records
carry it as `request_id`, which the JSON log format writes out.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# Letters, digits and . _ - only, so that an id can never forge a log line or a header.
_ACCEPTED = re.compile(rb"[A-Za-z0-9._-]{1,128}\Z")
current: ContextVar[str | None] = ContextVar("dockyard_request_id", default=None)


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == HEADER), None)
        request_id = (
            sent.decode() if sent is not None and _ACCEPTED.match(sent) else uuid.uuid4().hex
        )
        # Not reset afterwards: granian writes its access line in this same task after the
        # app returns, and should name the request too. Every request is a task of its own,
        # whose context starts from the server's, so an id never outlives its request.
        current.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != HEADER),
                    (HEADER, request_id.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


class WithRequestId(logging.Filter):
    """Puts the id of the request being served (or None) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True
