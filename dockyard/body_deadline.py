"""A request body must keep coming: a budget of waiting that grows with every byte received.

The HTTP server bounds how long headers take (`header_timeout_seconds`), but not a body:
a client that sends one byte every few seconds would hold a connection, a worker's task
and an upload's claim for as long as it likes. A total deadline is wrong too, since a
5 GiB layer over a slow link takes hours. So, as Apache's mod_reqtimeout does with
`body=20,MinRate=500`, the time the app spends waiting for the body may reach
`timeout` seconds plus one second for every `min_rate` bytes received so far. Only time
spent waiting on the client counts: a handler that pauses reading (writing a chunk to a
slow object store) costs the client nothing.

When the budget runs out the app is told the client went away (`http.disconnect`, which
every handler already copes with) and the client gets `408 Request Timeout` with
`Connection: close`, unless an answer had started already.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.early_refusal import refuse
from dockyard.unread_body import announces_body

log = logging.getLogger("dockyard.http")


class _Budget:
    def __init__(self, timeout: float, min_rate: int) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.received = 0
        self.waited = 0.0
        self.complete = False
        self.expired = False

    def left(self) -> float:
        return self.timeout + self.received / self.min_rate - self.waited


class BodyDeadline:
    def __init__(self, app: ASGIApp, *, timeout: float, min_rate: int) -> None:
        self.app = app
        self.timeout = timeout
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not announces_body(scope):
            await self.app(scope, receive, send)
            return
        budget = _Budget(self.timeout, self.min_rate)
        started = False

        async def timed_receive() -> Message:
            if budget.complete or budget.expired:
                if budget.expired:
                    return {"type": "http.disconnect"}
                return await receive()
            begun = time.monotonic()
            try:
                # A timer on this task, not wait_for's task per message: a 1 GiB layer
                # arrives in thousands of messages.
                async with asyncio.timeout(max(budget.left(), 0.0)):
                    message = await receive()
            except TimeoutError:
                budget.expired = True
                return {"type": "http.disconnect"}
            finally:
                budget.waited += time.monotonic() - begun
            if message["type"] == "http.request":
                budget.received += len(message.get("body", b""))
                budget.complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if budget.expired and not started:
                return  # the 408 below answers instead of what the app makes of a disconnect
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            # What the app raised from the disconnect it was handed (its 500 was held back
            # above); anything else it raises after a body that did arrive is its own.
            if not budget.expired:
                raise
        if budget.expired:
            log.info(
                "closed a request whose body came too slowly (%d bytes in %.0f s of waiting)",
                budget.received,
                budget.waited,
            )
            if not started:
                await _too_slow(scope, send, budget)


async def _too_slow(scope: Scope, send: Send, budget: _Budget) -> None:
    message = (
        f"the request body came too slowly: {budget.received} bytes in "
        f"{budget.waited:.0f} s; send at least {budget.min_rate} bytes a second"
    )
    await refuse(scope, send, 408, message, "UNKNOWN", {"min_rate": budget.min_rate})
