"""Request ids on answers and log lines; the JSON log format, down to a real server's output."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import httpx
import pytest

from dockyard.log_setup import JsonFormatter, logging_config
from dockyard.request_id import WithRequestId, current
from tests.support import start_server

HEX_ID = re.compile(r"[0-9a-f]{32}\Z")


def test_an_accepted_request_id_is_echoed(client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "nginx-7f3a.42_b"})
    assert response.headers["x-request-id"] == "nginx-7f3a.42_b"


@pytest.mark.parametrize("sent", [None, "has space", 'quote"d', "x" * 129, "é"])
def test_a_missing_or_unsafe_request_id_is_replaced(client, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent}
    response = client.get("/healthz", headers={k: v.encode() for k, v in headers.items()})
    assert HEX_ID.match(response.headers["x-request-id"])
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]


def test_every_answer_has_one_even_refusals(client) -> None:
    for response in (client.get("/v2/"), client.get("/nowhere"), client.get("/v1/regions")):
        assert HEX_ID.match(response.headers["x-request-id"]), response.status_code


def test_two_requests_get_two_ids(client) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("dockyard.test", logging.WARNING, __file__, 1, message, None, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_time_level_logger_message_and_request_id() -> None:
    token = current.set("req-1")
    try:
        rec = record("storage failed on %s", args=None)
        rec.msg, rec.args = "storage failed on %s", ("PUT /v2/x",)
        WithRequestId().filter(rec)
    finally:
        current.reset(token)
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["level"] == "warning"
    assert entry["logger"] == "dockyard.test"
    assert entry["message"] == "storage failed on PUT /v2/x"
    assert entry["request_id"] == "req-1"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\Z", entry["time"])


def test_json_lines_hold_the_exception_and_stay_one_line() -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        rec = record("unhandled", exc_info=sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert "RuntimeError: boom" in entry["exception"]
    assert "request_id" not in entry  # outside any request


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logging_config("xml", "info")


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_a_real_server_logs_json_lines_only(tmp_path: Path, server: str) -> None:
    srv = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}",
        log_format="json",
        server=server,
    )
    try:
        answered = httpx.get(f"{srv.url}/v2/", headers={"X-Request-ID": "trace-1"}, timeout=10)
        assert answered.headers["x-request-id"] == "trace-1"
    finally:
        srv.stop()
    lines = [line for line in srv.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = " ".join(e["message"] for e in entries)
    assert "created the first project" in messages
    assert "GET /v2/" in messages  # the access log, as JSON too
    access = [e for e in entries if "GET /v2/" in e["message"]]
    assert [e.get("request_id") for e in access] == ["trace-1"]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
