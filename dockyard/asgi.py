"""The entry point for ASGI servers that import the application by name (granian, uvicorn).

Settings come from the environment (DOCKYARD_*) and the TOML file named by DOCKYARD_CONFIG,
read here, at the edge, and nowhere deeper.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from dockyard.app import create_app
from dockyard.config import load_settings


def application() -> FastAPI:
    config = os.environ.get("DOCKYARD_CONFIG")
    return create_app(load_settings(Path(config) if config else None))
