"""The HTTP guards of the MES, installed by ``create_app`` in one call.

Order matters: the security headers wrap everything (a 413 carries them too), the body limit
comes next so an oversized body is refused before any other layer — audit, auth, parsing —
spends anything on it.
"""

from __future__ import annotations

from fastapi import FastAPI

from microfactory.mes.api.headers import SecurityHeaders
from microfactory.mes.api.limits import BodySizeLimit
from microfactory.mes.api.offline_docs import mount_docs
from microfactory.mes.settings import MesSettings


def install_http_guards(app: FastAPI, settings: MesSettings) -> None:
    """Body-size limit, security headers and the offline ``/docs``; call after other middleware."""
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # added last = outermost
    mount_docs(app)
