"""The demo's in-process MQTT broker (amqtt): enough for five machines, not for production."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str, port: int) -> None:
        self.url = f"mqtt://{host}:{port}"
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
        }
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            self._broker = Broker(config)

    async def start(self) -> None:
        await self._broker.start()
        log.info("embedded MQTT broker on %s", self.url)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._broker.shutdown()
