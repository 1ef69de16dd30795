"""``/docs``: Swagger UI from files shipped in the package, so it works without internet.

FastAPI's own page loads Swagger UI from a CDN (blank on a workshop network) and starts it with
an inline script, which the MES's Content-Security-Policy refuses. This page loads the assets of
the ``swagger-ui-bundle-v2`` package and a small static init script; ReDoc is not offered.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

log = logging.getLogger(__name__)

DOCS_PATH = "/docs"
INIT_SCRIPT = Path(__file__).parent.parent / "web" / "static" / "docs-init.js"
FAVICON = INIT_SCRIPT.with_name("favicon.svg")
SWAGGER_FILES = ("swagger-ui.css", "swagger-ui-bundle.js")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} — API</title>
<link rel="stylesheet" href="{root}{docs}/swagger-ui.css">
<link rel="icon" href="{root}{docs}/favicon.svg" type="image/svg+xml">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{root}{openapi}"></div>
<script src="{root}{docs}/swagger-ui-bundle.js"></script>
<script src="{root}{docs}/docs-init.js"></script>
</body>
</html>
"""


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def mount_docs(app: FastAPI) -> None:
    """Add ``/docs`` and its assets to ``app`` (built with ``docs_url=None``)."""
    swagger = _swagger_dir()
    if swagger is None:
        log.warning("/docs unavailable: package swagger-ui-bundle-v2 is not installed")
    files = {name: swagger / name for name in SWAGGER_FILES} if swagger else {}
    files["docs-init.js"] = INIT_SCRIPT
    files["favicon.svg"] = FAVICON
    openapi = app.openapi_url or "/openapi.json"
    title = app.title
    docs = APIRouter(include_in_schema=False)

    @docs.get(DOCS_PATH)
    def page(request: Request) -> Response:
        if swagger is None:
            return PlainTextResponse(
                "API docs need the package swagger-ui-bundle-v2 (pip install 'microfactory[mes]');"
                f" the schema is at {openapi}",
                status_code=503,
            )
        root = request.scope.get("root_path", "")
        html = PAGE.format(title=title, root=root, docs=DOCS_PATH, openapi=openapi)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @docs.get(DOCS_PATH + "/{name}")
    def asset(name: str) -> Response:
        path = files.get(name)
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    app.include_router(docs)
