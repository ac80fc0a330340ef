"""The access-log filter blanks secret query parameters and nothing else."""

from __future__ import annotations

import logging

import pytest

from dockyard.log_redaction import REDACTED, RedactQueryStrings, redact_query, redact_target


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("access_token=abc.def.ghi", f"access_token={REDACTED}"),
        ("service=r.example&password=hunter2&x=1", f"service=r.example&password={REDACTED}&x=1"),
        ("ACCESS_TOKEN=abc", f"ACCESS_TOKEN={REDACTED}"),
        ("access%5Ftoken=abc", f"access%5Ftoken={REDACTED}"),
        ("X-Amz-Signature=f00d&X-Amz-Expires=60", f"X-Amz-Signature={REDACTED}&X-Amz-Expires=60"),
        ("n=100&last=tag", "n=100&last=tag"),
        ("token=", "token="),
        ("", ""),
        ("mytoken=keep&token=drop", f"mytoken=keep&token={REDACTED}"),
    ],
)
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query) == expected


def test_a_target_keeps_its_path() -> None:
    assert redact_target("/v2/?token=abc") == f"/v2/?token={REDACTED}"
    assert redact_target("/v2/a/b/tags/list") == "/v2/a/b/tags/list"


def _with(args: object) -> logging.LogRecord:
    record = logging.LogRecord("access", logging.INFO, __file__, 1, "msg", None, None)
    record.args = args  # type: ignore[assignment]
    return record


def test_granian_records_are_redacted() -> None:
    record = _with({"path": "/v2/", "query_string": "access_token=s3cret&n=1", "status": 401})
    assert RedactQueryStrings().filter(record)
    assert record.args == {
        "path": "/v2/",
        "query_string": f"access_token={REDACTED}&n=1",
        "status": 401,
    }


def test_uvicorn_records_are_redacted() -> None:
    fmt = '%s - "%s %s HTTP/%s" %d'
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, fmt, None, None)
    record.args = ("127.0.0.1:5", "GET", "/auth/token?service=h&password=s3cret", "1.1", 401)
    assert RedactQueryStrings().filter(record)
    assert record.getMessage() == (
        f'127.0.0.1:5 - "GET /auth/token?service=h&password={REDACTED} HTTP/1.1" 401'
    )
