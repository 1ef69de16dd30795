"""One broker session of an adapter, as the supervisor sees it (a ``Connection``)."""

from __future__ import annotations

from microfactory.mqtt.client import MqttClient


class BrokerSession:
    """From CONNACK to the connection's end; shared by every adapter on a broker."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client

    async def run(self) -> str:
        return await self._client.session_ended()

    async def close(self) -> None:
        await self._client.close()
