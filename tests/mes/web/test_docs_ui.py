"""/docs in a real Chromium with every request off 127.0.0.1 blocked: Swagger UI renders the
operations from the package's own assets, and the MES's Content-Security-Policy refuses
nothing it needs (while it does refuse an inline style, which proves the check can fail)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from microfactory.mes.settings import MesSettings
from tests.helpers.markers import starts_server
from tests.mes.live import LiveMes


@pytest.fixture
@starts_server("MES (uvicorn)")
def mes(tmp_path: Path) -> Iterator[LiveMes]:
    live = LiveMes(MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}"))
    yield live
    live.close()


@pytest.mark.integration
def test_swagger_ui_renders_offline_under_the_csp(mes: LiveMes, open_page: Any) -> None:
    page, errors = open_page()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:  # the workshop without internet
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{mes.url}/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/health" in paths and "/api/v1/auth/token" in paths
    assert page.locator(".info .title").inner_text().startswith("microfactory MES")
    page.locator("#operations-system-health_api_v1_health_get, .opblock-get").first.click()
    assert not outside, outside
    assert not errors, errors
    # the check above can fail: an inline style attribute is refused and reported
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color:red\">x</p>')")
    page.wait_for_timeout(200)
    assert any(e.startswith("CSP:") for e in errors), errors
