"""Browser-test fixtures: the real MES serving the UI, fed by the simulated workshop through the
real gateway over a real Mosquitto, and Debian's chromium driven by Playwright.

The servers run in one asyncio loop on a background thread (the MES with uvicorn, the gateway,
the simulators); Playwright's sync API drives the browser from the test thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from microfactory.cli.ports import free_port
from microfactory.gateway.runtime import Gateway
from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.seed import seed_demo
from microfactory.mes.server import RunningServer, serve_in_loop
from microfactory.mes.settings import MesSettings
from microfactory.sim.workshop import Workshop
from tests.helpers.markers import starts_server
from tests.helpers.servers import Mosquitto
from tests.helpers.workshop import RunningWorkshop, workshop_through_gateway

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

CHROMIUM = os.environ.get("MICROFACTORY_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts" / "ui"
SPEED = 20.0  # simulated seconds per wall second: a laser part about every second
T = TypeVar("T")


class LoopThread:
    """An asyncio loop on a daemon thread, for servers that must outlive one test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ui-servers", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Shop:
    """The running micro-factory under test."""

    url: str
    api: httpx.Client  # as admin
    loop: LoopThread
    workshop: Workshop
    gateway: Gateway
    server: RunningServer
    app: Any
    notes: dict[str, Any] = field(default_factory=dict)

    def client(self, user: str, password: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1", auth=(user, password or user), timeout=15
        )


async def _wait(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _start(
    tmp: Path, mqtt_url: str
) -> tuple[AsyncExitStack, RunningWorkshop, RunningServer, Any]:
    """The MES (on the broker), then the workshop through the gateway; closed by the stack."""
    stack = AsyncExitStack()
    try:
        settings = MesSettings(
            db_url=f"sqlite:///{tmp / 'mes.sqlite'}",
            mqtt_url=mqtt_url,
            site="demo",
            demo=True,
            mqtt_client_id="microfactory-mes-ui-test",
        )
        app = create_app(settings)
        runtime = app.state.runtime
        with db.session_scope(runtime.sessions) as session:
            seed_demo(session)
        server = await serve_in_loop(app, "127.0.0.1", free_port())
        stack.push_async_callback(server.stop, timeout_s=5)
        await _wait(lambda: runtime.mqtt_status() == "connected", "the MES bridge on the broker")
        running = await stack.enter_async_context(
            workshop_through_gateway(
                tmp,
                mqtt_url,
                seed=11,
                speed=SPEED,
                data_dir=tmp / "edge",
                site_name="ui test site",
                stop_timeout_s=10,
            )
        )
    except BaseException:
        await stack.aclose()
        raise
    return stack, running, server, app


@pytest.fixture(scope="module")
@starts_server("Mosquitto, the simulated workshop, the gateway and the MES")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("ui-shop")
    loop = LoopThread()
    mosquitto = Mosquitto(tmp / "mosquitto")
    with mosquitto:
        stack, running, server, app = loop.run(_start(tmp, mosquitto.url))
        api = httpx.Client(base_url=f"{server.url}/api/v1", auth=("admin", "admin"), timeout=15)
        try:
            # machine events reach the MES before the first browser looks
            deadline = time.monotonic() + 30
            producing = {"laser-1", "mill-1", "printer-1", "assembly-1"}
            while not all(
                m["state"] for m in api.get("/machines").json()["items"] if m["id"] in producing
            ):
                assert time.monotonic() < deadline, "no machine state reached the MES"
                time.sleep(0.2)
            yield Shop(server.url, api, loop, running.workshop, running.gateway, server, app)
        finally:
            api.close()
            loop.run(stack.aclose())
            loop.close()


@pytest.fixture(scope="module")
@starts_server("Chromium")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class PageErrors(list[str]):
    """JavaScript errors a page raised; a test ends by asserting there were none."""


def _csp_violation(msg: Any, errors: PageErrors) -> None:
    if "Content Security Policy" in msg.text:
        errors.append(f"CSP: {msg.text}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def open_page(
    browser: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., tuple[Any, PageErrors]]]:
    contexts: list[Any] = []

    def make(width: int = 1366, height: int = 900) -> tuple[Any, PageErrors]:
        ctx = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        errors = PageErrors()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # the MES's Content-Security-Policy: anything it refuses (an inline script, a style="…"
        # attribute) is reported on the console, and counts as an error of the page
        page.on("console", lambda msg: _csp_violation(msg, errors))
        return page, errors

    yield make
    if request.node.stash.get(FAILED, False):  # what the screens showed when it broke
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i, ctx in enumerate(contexts):
            for j, page in enumerate(ctx.pages):
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}-{i}{j}.png"))
    for ctx in contexts:
        ctx.close()


def log_in(page: Any, base_url: str, user: str, password: str | None = None) -> None:
    page.goto(f"{base_url}/")
    page.wait_for_selector("#login-form")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password or user)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#topbar:not([hidden])")
