"""How the server process logs: Dockyard's own loggers, the HTTP server's and its access log.

`text` (the default) is for people: one line per record, as before. `json` is for log
pipelines: one JSON object per line with time, level, logger, message, the request id of
the request being served, and the exception when there is one. Configured once per
process, by the entry points (`serve`, the granian runner), never by create_app: tests and
embedding applications keep their own logging.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
_SERVER_LOGGERS = ("_granian", "granian.access", "uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """A dictConfig for the whole process: the root (Dockyard's loggers) and the server's."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    formatter: dict[str, Any] = (
        {"()": "dockyard.log_setup.JsonFormatter"}
        if log_format == "json"
        else {"format": "[%(asctime)s] %(levelname)s %(name)s: %(message)s"}
    )
    plain: dict[str, Any] = (
        formatter if log_format == "json" else {"format": "%(message)s"}  # access lines
    )
    server_level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "dockyard.request_id.WithRequestId"}},
        "formatters": {"default": formatter, "plain": plain},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "default",
                "filters": ["request_id"],
            },
            "plain": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "plain",
                "filters": ["request_id"],
            },
        },
        "root": {"handlers": ["default"], "level": server_level},
        "loggers": {
            name: {
                "handlers": ["plain" if name.endswith("access") else "default"],
                "level": server_level,
                "propagate": False,
            }
            for name in _SERVER_LOGGERS
        }
        # Alembic lists its plugins at every start; the migrations it runs are worth a line.
        | {"alembic.runtime.plugins": {"level": "WARNING"}},
    }


def configure(log_format: str, level: str) -> None:
    logging.config.dictConfig(logging_config(log_format, level))
