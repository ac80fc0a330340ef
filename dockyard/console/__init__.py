"""The web console at /: server-rendered pages over the same domain services as /v1.

One module per group of pages (auth, registries, credentials, browse), templates in templates/,
CSS and the copy button's script in static/, served by Dockyard itself: no build step and
nothing fetched from elsewhere, since machines may have no internet.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from dockyard.console import auth, browse, credentials, registries
from dockyard.console.session import SessionSealer
from dockyard.console.web import HERE, Console, PageExitError
from dockyard.services import Services

STATIC_PATH = "/static"


def install_console(app: FastAPI, services: Services) -> None:
    sealer = SessionSealer(services.registries.cipher, services.settings.console_session_seconds)
    app.state.console = Console(services, sealer)

    async def page_exit(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageExitError)
        return exc.response

    app.add_exception_handler(PageExitError, page_exit)
    for module in (auth, registries, credentials, browse):
        module.routes.install(app)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="console-static")
