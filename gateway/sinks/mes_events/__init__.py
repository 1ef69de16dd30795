"""The MES link as a sink: machine events out (QoS 1), machine context in (retained)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from microfactory.mqtt.settings import MqttSettings

from ..base import SinkFactory, SinkPlugin

if TYPE_CHECKING:
    from ...config import MesLinkSettings, SiteConfig


class MesLinkTarget(NamedTuple):
    """The MES link's settings and the site broker it talks through."""

    settings: MesLinkSettings
    broker: MqttSettings


def _select(site: SiteConfig) -> MesLinkTarget | None:
    if site.mes_link is None:
        return None
    return MesLinkTarget(site.mes_link, site.mqtt or MqttSettings())


def _load() -> SinkFactory[MesLinkTarget]:
    from .link import MesLink

    return MesLink


plugin: SinkPlugin[MesLinkTarget] = SinkPlugin(
    select=_select,
    load=_load,
    requirements=("paho.mqtt",),
    install_hint="pip install 'microfactory[gateway]'",
)
