"""Site-config model of the OPC UA adapter (``type: opcua``)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ...units import check_unit
from ..base import AdapterConfigBase

_NODE = re.compile(r"^(?:nsu=(?P<uri>[^;]+);)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(
        description="'nsu=<namespace URI>;s=Name', or 's=Name' / 'i=123' in the adapter's namespace_uri"
    )
    signal: str
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_interval_ms: float = Field(default=100.0, ge=0)
    poll_interval_ms: float = Field(default=1000.0, ge=10)

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if v.startswith("ns="):
            raise ValueError(
                f"node {v!r} names its namespace by index; use 'nsu=<namespace URI>;...' or set "
                "namespace_uri (indexes may change when the server restarts)"
            )
        if not _NODE.match(v):
            raise ValueError(f"node {v!r} is not a node id like 'nsu=urn:x;s=Name' or 's=Name'")
        return v

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v

    def parts(self) -> tuple[str | None, str, str]:
        """(namespace URI or None, identifier kind, identifier)."""
        m = _NODE.match(self.node)
        assert m is not None  # checked by the validator
        return m.group("uri"), m.group("kind"), m.group("ident")


class OpcUaAdapterConfig(AdapterConfigBase):
    type: Literal["opcua"] = "opcua"
    machine: str
    endpoint: str
    namespace_uri: str | None = Field(
        default=None, description="namespace of node ids without nsu= (none: namespace 0)"
    )
    publishing_interval_ms: float = Field(default=100.0, gt=0)
    queue_size: int = Field(default=100, ge=0, description="server-side queue per monitored item")
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    # with timeout_s, bounds how long data stays away after the server is back (<= 30 s)
    reconnect_max_s: float = Field(default=10.0, ge=1, le=600)
    watchdog_s: float = Field(default=2.0, gt=0, le=60)
    nodes: list[NodeSpec] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError(f"expected opc.tcp://HOST:PORT[/path], got {v!r}")
        return v

    def machines_referenced(self) -> set[str]:
        return {self.machine}
