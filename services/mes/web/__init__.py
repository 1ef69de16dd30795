"""The operator web UI served by the MES: one static single-page app and a live tile stream.

Everything ships inside the package (``static/``): plain HTML, CSS and JavaScript with
hand-drawn SVG charts, no CDN and no build step, so a workshop without internet gets it all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from microfactory.mes.web.live import LiveHub
from microfactory.mes.web.live import router as live_router

STATIC_DIR = Path(__file__).parent / "static"
UI_PATH = "/ui"


def _pages(demo: bool, site: str) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/", status_code=307)

    @pages.get(UI_PATH)
    def ui_no_slash() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/", status_code=307)

    @pages.get(f"{UI_PATH}/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @pages.get(f"{UI_PATH}/info.json")
    def info() -> dict[str, Any]:
        """What the login screen may say before anyone is logged in."""
        return {"site": site, "demo": demo}

    return pages


def mount_web(app: FastAPI, *, api_prefix: str = "/api/v1", interval_s: float = 0.5) -> None:
    """Add the UI pages, its static assets and the live stream (under the API) to ``app``."""
    runtime = app.state.runtime
    app.state.live_hub = LiveHub(runtime.sessions, interval_s=interval_s)
    app.include_router(live_router, prefix=api_prefix)
    app.include_router(_pages(runtime.settings.demo, runtime.settings.site))
    app.mount(f"{UI_PATH}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
