"""Answers repeated GETs of a few /v1 reads from memory while the database is unchanged.

A list of registries is read far more often than it changes (dashboards, CI jobs and
Terraform poll it), and each read costs a thread hop, a transaction and serialization:
~1.5 ms, where sending bytes already made costs ~0.05 ms. This middleware keeps the last
200 response per (Authorization header, path, query) with the database version read before
the request reached the handler; the entry is served while that version is current. Any
commit anywhere (a registry changed, a token revoked, from this process, another replica
or the admin CLI) changes the version, so what is served is what the handler would answer
now: a revoked token is refused at once, as without the cache.

The key holds a SHA-256 of the header, not the token itself, and the X-Nodion-Project
headers: a user API key's answer depends on the project it names. It also depends on time,
which no commit marks: a key that expires has its answers dropped from then on. The
handler says until when its answer holds (`answer_holds_until`), the entry is served only
before then, and the request after it reaches the handler, which refuses the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.db.changes import ChangeFeed
from dockyard.db.models import utcnow

MAX_ENTRIES = 256  # a 50-registry list is ~20 KB: at most ~5 MB
_HOLDS_UNTIL = "dockyard.answer_holds_until"  # a key of the request's ASGI scope
_PROJECT_HEADER = b"x-nodion-project"


def answer_holds_until(scope: Scope, moment: datetime | None) -> None:
    """Says, from a handler, that its answer stops being true at `moment` (a credential's
    expiry) even if the database stays the same. The scope is the dict this middleware
    passed down, so it reads the mark once the handler has answered."""
    if moment is not None:
        scope[_HOLDS_UNTIL] = moment


@dataclass
class _Entry:
    version: Hashable
    holds_until: datetime | None
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class _Capture:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False


class CachedReads:
    def __init__(
        self,
        app: ASGIApp,
        *,
        feed: ChangeFeed,
        paths: frozenset[str],
        max_entries: int = MAX_ENTRIES,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.app = app
        self.feed = feed
        self.paths = paths
        self.max_entries = max_entries
        self.now = now
        self._entries: dict[tuple[bytes, str, bytes], _Entry] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        version = self.feed.version() if authorization else None
        if authorization is None or version is None:
            await self.app(scope, receive, send)
            return
        caller = hashlib.sha256(authorization)
        for name, value in scope["headers"]:
            if name == _PROJECT_HEADER:
                caller.update(b"\0" + value)
        key = (caller.digest(), scope["path"], scope["query_string"])
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.version == version
            and (entry.holds_until is None or self.now() < entry.holds_until)
        ):
            await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
            await send({"type": "http.response.body", "body": entry.body})
            return
        captured = _Capture()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured.status = message["status"]
                captured.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                captured.chunks.append(message.get("body", b""))
                captured.complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, capture)
        if captured.status == 200 and captured.complete:
            holds_until = scope.get(_HOLDS_UNTIL)
            entry = _Entry(version, holds_until, captured.headers, b"".join(captured.chunks))
            self._remember(key, entry)

    def _remember(self, key: tuple[bytes, str, bytes], entry: _Entry) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = entry
