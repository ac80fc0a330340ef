"""The errors the rules raise; each face of the server renders them its own way."""

from __future__ import annotations


class DomainError(Exception):
    """A request the rules refuse. `messages` are whole sentences, one per problem."""

    def __init__(self, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.messages = list(messages)


class RefusedError(DomainError):
    """The request is well-formed but the rules refuse it (HTTP 400)."""


class NotFoundError(DomainError):
    """No such object in the caller's project (HTTP 404, whether or not it exists elsewhere)."""
