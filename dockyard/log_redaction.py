"""Secrets that clients put in URLs never reach the access log.

Some clients send a token as `?access_token=` or a password in the query string, and a
presigned S3 URL carries its signature there. The HTTP servers (granian, uvicorn) log the
query string verbatim, so their access loggers get a filter that blanks those values and
keeps the rest of the line as it was, for whoever reads the log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "password",
        "secret",
        "client_secret",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)
REDACTED = "REDACTED"
# name=value pairs of a query string; the name is matched case-insensitively and may be
# percent-encoded by a careful client, so it is compared after a light decoding below.
_PAIR = re.compile(r"(?P<name>[^&=;]*)=(?P<value>[^&;]*)")


def _name(raw: str) -> str:
    return raw.replace("%5F", "_").replace("%5f", "_").replace("%2D", "-").replace("%2d", "-")


def redact_query(query: str) -> str:
    """The query string with the value of every secret parameter replaced."""

    def blank(match: re.Match[str]) -> str:
        if _name(match["name"]).lower() in SECRET_PARAMETERS and match["value"]:
            return f"{match['name']}={REDACTED}"
        return match[0]

    return _PAIR.sub(blank, query)


def redact_target(target: str) -> str:
    """A request target (path?query) with its query string redacted."""
    path, mark, query = target.partition("?")
    return f"{path}{mark}{redact_query(query)}" if mark else target


class RedactQueryStrings(logging.Filter):
    """Rewrites the arguments of an access-log record before any handler formats it:
    granian passes a dict with `query_string`, uvicorn a tuple holding `path?query`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, dict) and isinstance(args.get("query_string"), str):
            record.args = {**args, "query_string": redact_query(args["query_string"])}
        elif isinstance(args, tuple):
            record.args = tuple(
                redact_target(arg) if isinstance(arg, str) and "?" in arg else arg for arg in args
            )
        return True


def protect_access_logs(*names: str) -> None:
    for name in names or ("granian.access", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactQueryStrings())
