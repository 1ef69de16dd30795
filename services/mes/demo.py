"""The MES of ``microfactory demo``: in-process, SQLite in the demo's data dir, demo data.

Demo users (documented, accepted only because the MES runs in demo mode):
``operator``/``operator``, ``manager``/``manager``, ``admin``/``admin``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.api.deps import Runtime
from microfactory.mes.seed import seed_demo, start_demo_batches
from microfactory.mes.server import RunningServer, serve_in_loop
from microfactory.mes.settings import MesSettings

log = logging.getLogger(__name__)


@dataclass
class DemoMes:
    """The running demo MES; ``stop()`` shuts the HTTP server and the MQTT bridge down."""

    url: str
    settings: MesSettings
    runtime: Runtime
    server: RunningServer

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    async def stop(self) -> None:
        await self.server.stop()


async def start_demo_mes(
    *,
    host: str,
    port: int,
    mqtt_url: str,
    site: str,
    data_dir: Path,
    start_batches: bool = True,
) -> DemoMes:
    """Start the MES in the running loop, seed the demo data and put batches on the machines."""
    settings = MesSettings(
        db_url=f"sqlite:///{data_dir / 'mes.sqlite'}",
        mqtt_url=mqtt_url,
        site=site,
        host=host,
        port=port,
        demo=True,
        mqtt_client_id=f"microfactory-mes-{site}-demo",
    )
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    with db.session_scope(runtime.sessions) as session:
        seed_demo(session)
        changed = start_demo_batches(session) if start_batches else set()
    # The bridge republishes every machine's context when it connects; this covers a
    # bridge that is already connected (it is not, on a fresh start) and says what changed.
    server = await serve_in_loop(app, host, port)
    if changed:
        runtime.publish_contexts(changed)
        log.info("demo MES: batches started on %s", ", ".join(sorted(changed)))
    return DemoMes(url=server.url, settings=settings, runtime=runtime, server=server)
