"""`WWW-Authenticate` challenges (RFC 9110 section 11.6.1), as registries send them:

Bearer realm="https://auth.docker.io/token",service="registry.docker.io"
Basic realm="Registry Realm"
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 (RFC 9110's token, not a secret)
_SCHEME = re.compile(rf"[\s,]*({_TOKEN})(?=\s|,|$)")
_PARAM = re.compile(rf'[\s,]*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?=,|$)')
_ESCAPE = re.compile(r"\\(.)")
# A registry's challenge is a line or two; anything longer is not read.
MAX_HEADER_CHARS = 8192


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)  # names in lower case


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Every challenge of the headers, in order; what cannot be parsed ends a header."""
    found: list[Challenge] = []
    for header in headers:
        found.extend(_parse(header[:MAX_HEADER_CHARS]))
    return found


def _parse(text: str) -> list[Challenge]:
    found: list[Challenge] = []
    pos = 0
    while pos < len(text):
        scheme = _SCHEME.match(text, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while (param := _PARAM.match(text, pos)) is not None:
            quoted, plain = param.group(2), param.group(3)
            value = _ESCAPE.sub(r"\1", quoted) if quoted is not None else plain
            params.setdefault(param.group(1).lower(), value)
            pos = param.end()
        found.append(Challenge(scheme.group(1).lower(), params))
        if not params:
            break  # a token68 (`Negotiate abc==`) or garbage: nothing more to read safely
    return found
