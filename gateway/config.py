"""The site config: one YAML file describing machines, adapters and sinks.

Values come from the file and can be overridden by environment variables
(``MICROFACTORY_`` prefix, ``__`` between nesting levels, e.g. ``MICROFACTORY_INFLUXDB__URL``),
so a container or a systemd unit can point the same file at another broker or database.
Every error names the file, the field path, the value and what was expected.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import create_model as _create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from microfactory.contract import check_signing_key
from microfactory.mqtt.settings import MqttSettings, redact_url

from .adapters import config_models
from .adapters.base import AdapterConfigBase
from .errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "MICROFACTORY_"
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InfluxSettings(_Section):
    """One InfluxDB: ``v1`` talks to ``/write`` (InfluxDB 1.x), ``v2`` uses influxdb-client."""

    api: Literal["v1", "v2"] = Field(
        default="v2",
        description=(
            "`v1`: InfluxDB 1.x `/write` (Debian's `influxdb`). `v2`: InfluxDB "
            "2.x/3.x or anything serving `/api/v2/write`, through influxdb-client."
        ),
    )
    url: str = Field(
        description="Base URL, `http://HOST:PORT` or `https://…` (trailing `/` removed)."
    )
    # v1
    database: str | None = Field(
        default=None,
        description="v1: database to write to (required; created at start if missing).",
    )
    retention_policy: str | None = Field(
        default=None, description="v1: retention policy (`rp`); none: the database's default."
    )
    username: str | None = Field(default=None, description="v1: user, when authentication is on.")
    password: str | None = Field(
        default=None, description="v1: password; prefer `MICROFACTORY_INFLUXDB__PASSWORD`."
    )
    # v2
    org: str | None = Field(default=None, description="v2: organisation (required).")
    bucket: str | None = Field(default=None, description="v2: bucket (required).")
    token: str | None = Field(
        default=None, description="v2: API token; prefer `MICROFACTORY_INFLUXDB__TOKEN`."
    )
    batch_size: int = Field(
        default=5000, ge=1, le=100_000, description="Most points per write request."
    )
    timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="HTTP timeout of one write, in seconds."
    )

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://HOST:PORT or https://HOST:PORT, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSettings:
        if self.api == "v1" and not self.database:
            raise ValueError("api v1 needs 'database' (the InfluxDB 1.x database to write to)")
        if self.api == "v2":
            missing = [f for f in ("org", "bucket") if not getattr(self, f)]
            if missing:
                raise ValueError(f"api v2 needs {' and '.join(repr(m) for m in missing)}")
        return self


class LocalHistorySettings(_Section):
    """The embedded SQLite history; on by default only when no InfluxDB is configured."""

    enabled: bool | None = Field(
        default=None,
        description="`true`/`false` forces it on or off; unset: on exactly when there is no `influxdb:`.",
    )
    path: Path = Field(
        default=Path("data/history.sqlite"), description="SQLite file (directories are created)."
    )
    retention_days: float = Field(
        default=30.0, gt=0, description="Points older than this are deleted (checked hourly)."
    )


class SpoolSettings(_Section):
    path: Path = Field(
        default=Path("data/spool.sqlite"),
        description=(
            "SQLite file of the spool (WAL mode; directories are created). Dead "
            "letters and quarantined points are kept in it too."
        ),
    )
    max_bytes: int = Field(
        default=1 << 30, ge=1 << 20, description="Disk quota (default 1 GiB, at least 1 MiB)."
    )
    max_age_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Samples spooled longer ago than this are dropped and counted (default 7 days).",
    )
    overflow: Literal["drop_oldest", "stop_accepting"] = Field(
        default="drop_oldest",
        description=(
            "At the quota: `drop_oldest` deletes the oldest tenth and counts it per"
            " sink (logged, at most one line a minute); `stop_accepting` takes no "
            "more until rows leave: what does not fit is not acknowledged (MQTT QoS 1 "
            "messages wait at the broker), it is held and offered again every second "
            "(see `hold_max_samples`)."
        ),
    )
    hold_max_samples: int = Field(
        default=50_000,
        ge=100,
        description=(
            "While the spool cannot take samples (disk full, or the quota with "
            "`stop_accepting`) the pipeline holds them in memory and retries every "
            "second. Samples whose source waits for the acknowledgement (MQTT QoS 1) "
            "are held whatever this says: nothing of them is acknowledged, so a restart "
            "gets them again from the broker (memory: what the broker sends without "
            "acknowledgement; Mosquitto 2.0.11 does not always stop at the MQTT 5 "
            "`receive_maximum`). Samples from sources that cannot wait (Modbus, OPC UA) "
            "are held up to this number, then refused and counted."
        ),
    )
    dead_letters_max_age_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Dead letters older than this are pruned (checked once a minute; default 7 days).",
    )
    dead_letters_max_rows: int = Field(
        default=100_000,
        ge=1,
        description="At most this many dead letters are kept; the oldest are pruned first.",
    )
    quarantine_max_age_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Quarantined points older than this are pruned (default 7 days).",
    )
    quarantine_max_rows: int = Field(
        default=100_000,
        ge=1,
        description="At most this many quarantined points are kept; the oldest are pruned first.",
    )
    durability: Literal["full", "normal"] = Field(
        default="full",
        description=(
            "`full`: a committed sample survives a power cut (SQLite "
            "`synchronous=FULL`). `normal`: survives a crash of the gateway, may "
            "lose the last commits on power loss, and costs less flash wear."
        ),
    )
    commit_interval_ms: int | None = Field(
        default=None,
        ge=1,
        le=5000,
        deprecated="has no effect: the pipeline commits what has arrived as soon as the "
        "previous commit is on disk",
        exclude=True,
        description=(
            "Accepted but not used yet (the pipeline commits whatever has arrived "
            "as soon as the previous commit is done)."
        ),
    )

    @field_validator("commit_interval_ms")
    @classmethod
    def _placebo(cls, v: int | None) -> int | None:
        if v is not None:
            log.warning("spool.commit_interval_ms has no effect and is ignored; remove it")
        return v


class PipelineSettings(_Section):
    """Sanity limits: a timestamp outside them is a broken clock, not data."""

    min_timestamp_ns: int = Field(
        default=946_684_800_000_000_000,
        description=(
            "Samples stamped before this (UTC ns; default 2000-01-01) are "
            "dead-lettered: a machine clock that was never set."
        ),
    )  # 2000-01-01
    max_future_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description=(
            "Samples stamped more than this many seconds ahead of the gateway's "
            "clock are dead-lettered."
        ),
    )
    max_text_length: int = Field(
        default=1024,
        ge=1,
        description="Longest accepted text value (`state`, `program`), in characters.",
    )


class HealthSettings(_Section):
    host: str = Field(default="127.0.0.1", description="Address for the health endpoint.")
    port: int = Field(
        default=9108, ge=0, le=65535, description="Port for the health endpoint (0: any free port)."
    )
    enabled: bool = Field(default=True, description="Serve the health endpoint.")


class MesLinkSettings(_Section):
    """The MES link: machine context in (retained MQTT), machine events out (QoS 1).

    Uses the ``mqtt:`` broker. ``events: false`` keeps only the context tagging.
    """

    events: bool = Field(
        default=True,
        description=(
            "Publish machine events (state changes, parts, gaps) for the MES. "
            "`false`: only subscribe to the context and tag samples with it."
        ),
    )
    client_id: str | None = Field(
        default=None,
        description="Client id of the MES link's persistent session; unset: `<mqtt.client_id>-mes`.",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1",
        description=(
            "MQTT version of the persistent session: `3.1.1` (clean session off; "
            "every broker) or `5` (session expiry below)."
        ),
    )
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=0,
        le=2**32 - 1,
        description=(
            "MQTT 5 only: how long the broker keeps the session (and queued "
            "context) while the gateway is away."
        ),
    )
    publish_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long to wait for the broker's PUBACKs of a batch of events before retrying it.",
    )
    connect_wait_s: float = Field(
        default=3.0,
        ge=0,
        le=60,
        description=(
            "At start, wait this long for the retained contexts so the first "
            "samples are already tagged."
        ),
    )
    hold_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "A part is held until its energy and good/scrap counters have been "
            "seen, or the machine's data has moved on by this many seconds."
        ),
    )
    batch_size: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Most spooled samples turned into events at once.",
    )
    state_path: Path | None = Field(
        default=None,
        description=(
            "Where the event deriver's memory (last counters per machine) is saved "
            "after each batch; default `mes-events-state.json` next to the spool."
        ),
    )
    signing_key: str | None = Field(
        default=None,
        repr=False,
        description=(
            "For a broker without ACLs: HMAC key shared with the MES (its "
            "`MICROFACTORY_MES__MQTT_SIGNING_KEY`), at least 32 bytes. Set: events are "
            "published signed, and unsigned or badly signed contexts are refused. Prefer "
            "the environment: `MICROFACTORY_MES_LINK__SIGNING_KEY`."
        ),
    )

    @field_validator("signing_key")
    @classmethod
    def _long_signing_key(cls, v: str | None) -> str | None:
        return check_signing_key(v, "mes_link.signing_key (MICROFACTORY_MES_LINK__SIGNING_KEY)")


class MachineConfig(_Section):
    id: str = Field(
        description=(
            "Machine id: the `machine` tag in InfluxDB and an MQTT topic level. "
            "Lowercase letters, digits, `-`, `_`, `.`, at most 64 characters; "
            "unique."
        )
    )
    kind: str = Field(
        default="generic",
        description=(
            "What the machine is (`cnc_mill`, `laser_cutter`, …); free text, for "
            "people and dashboards."
        ),
    )
    name: str | None = Field(default=None, description="Display name.")
    nominal_power_w: float | None = Field(
        default=None, ge=0, description="Rated power in W, for people and dashboards."
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(
                f"machine id {v!r} must be lowercase letters, digits, '-', '_' or '.' "
                "(it becomes an InfluxDB tag and an MQTT topic level)"
            )
        return v


class SiteConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
    site: str = Field(
        default="workshop",
        description=(
            "Site id: the `site` tag on every point and a level of the MES topics. "
            "Lowercase letters, digits, `-`, `_`, `.`."
        ),
    )
    machines: list[MachineConfig] = Field(
        min_length=1,
        description=(
            "The machines of the workshop (at least one). Adapters may only produce"
            " samples for machines declared here."
        ),
    )
    adapters: list[AdapterConfigBase] = Field(
        default_factory=list,
        description=(
            "Connections to machines; each entry's `type` picks the adapter "
            "(`opcua`, `mqtt`, or any installed through the `microfactory.adapters`"
            " entry point)."
        ),
    )
    mqtt: MqttSettings | None = Field(
        default=None,
        description=(
            "The shared broker. Filled with the defaults when an `mqtt` adapter or "
            "`mes_link:` needs a broker and the section is absent."
        ),
    )
    influxdb: InfluxSettings | None = Field(
        default=None,
        description="Where telemetry goes. Absent: the local history is the only store.",
    )
    local_history: LocalHistorySettings = Field(
        default_factory=LocalHistorySettings, description="The embedded SQLite history."
    )
    spool: SpoolSettings = Field(
        default_factory=SpoolSettings,
        description="The on-disk store-and-forward buffer between pipeline and sinks.",
    )
    pipeline: PipelineSettings = Field(
        default_factory=PipelineSettings,
        description="Validation limits of the normalisation stage.",
    )
    health: HealthSettings = Field(
        default_factory=HealthSettings,
        description="Health endpoint settings (see the note under *health*).",
    )
    mes_link: MesLinkSettings | None = Field(
        default=None, description="The MES link. Absent: no context tags, no machine events."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file: that is what an override is for.
        return (env_settings, init_settings)

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"site {v!r} must be lowercase letters, digits, '-', '_' or '.'")
        return v

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        ids = [m.id for m in self.machines]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"machines: duplicate machine id {', '.join(dup)}")
        names = [a.name for a in self.adapters]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"adapters: duplicate adapter name {', '.join(dup)}")
        known = set(ids)
        for i, adapter in enumerate(self.adapters):
            for machine in sorted(adapter.machines_referenced() - known):
                raise ValueError(
                    f"adapters[{i}] ({adapter.name}): machine {machine!r} is not declared "
                    f"under 'machines' (declared: {', '.join(sorted(known))})"
                )
        _one_energy_source(self.adapters)
        if self.mes_link is not None and self.mqtt is None:
            self.mqtt = MqttSettings()
        self.adapters = [a.with_site_defaults(self) for a in self.adapters]
        return self

    @property
    def history_enabled(self) -> bool:
        if self.local_history.enabled is None:
            return self.influxdb is None
        return self.local_history.enabled


def _one_energy_source(adapters: list[AdapterConfigBase]) -> None:
    """Refuse two adapters feeding one machine's energy counter.

    A meter measuring a machine replaces the machine's own counter: two counters of one
    machine interleaved in time would look like resets at every sample, and every part's
    energy would be wrong. Only what an adapter declares is checked (see
    ``AdapterConfigBase.signals_referenced``).
    """
    sources: dict[str, list[str]] = {}
    for adapter in adapters:
        for machine, signal in sorted(adapter.signals_referenced()):
            if signal == "energy_active":
                sources.setdefault(machine, []).append(adapter.name)
    for machine, names in sorted(sources.items()):
        if len(names) > 1:
            raise ValueError(
                f"machine {machine!r} gets energy_active from adapters "
                f"{', '.join(repr(n) for n in names)}: keep one (a meter measuring a machine "
                "replaces the machine's own energy counter; map the other one's energy to "
                "another machine or leave it out)"
            )


def _site_model() -> type[SiteConfig]:
    """SiteConfig whose ``adapters`` is the union of every registered adapter's config."""
    models = tuple(config_models().values())
    union = Annotated[Union[models], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
    model: type[SiteConfig] = _create_model(
        "SiteConfig", __base__=SiteConfig, adapters=(list[union], Field(default_factory=list))
    )
    return model


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(e: Any) -> str:
    """Pydantic's wording, rephrased where it speaks of its internals rather than the file."""
    kind = e["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if kind == "union_tag_invalid":
        ctx = e.get("ctx", {})
        return (
            f"unknown adapter type {ctx.get('tag')!r} (expected one of: {ctx.get('expected_tags')})"
        )
    if kind == "union_tag_not_found":
        return "missing 'type' (the adapter kind, e.g. opcua or mqtt)"
    return str(e["msg"]).removeprefix("Value error, ")


def format_errors(err: ValidationError) -> list[str]:
    adapter_types = set(config_models())
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        # a tagged union puts the tag in the path (adapters.0.opcua.nodes): not in the file
        if len(loc) > 2 and loc[0] == "adapters" and loc[2] in adapter_types:
            loc = loc[:2] + loc[3:]
        if e["type"] == "union_tag_invalid":
            loc = (*loc, "type")
        msg = _message(e)
        path = _loc(loc)
        shown = e.get("input")
        if isinstance(shown, str) and "://" in shown:
            shown = redact_url(shown)  # a URL's user:password@ never goes into an error
        got = ""
        if not isinstance(shown, dict | list) and shown is not None and repr(shown) not in msg:
            got = f" (got {shown!r})"
        problems.append(f"{path}: {msg}{got}" if path else msg)
    return problems


def parse_site_config(data: Any, source: str = "<site config>") -> SiteConfig:
    """Validate an already-loaded mapping; raise ConfigError naming every problem."""
    if not isinstance(data, dict):
        raise ConfigError(
            source, [f"expected a mapping at the top level, got {type(data).__name__}"]
        )
    try:
        return _site_model()(**data)
    except ValidationError as err:
        raise ConfigError(source, format_errors(err)) from err


def load_site_config(path: str | Path) -> SiteConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read file: {err.strerror}"]) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(str(path), [f"{where}not valid YAML: {problem}"]) from err
    site = parse_site_config(data if data is not None else {}, str(path))
    base = path.resolve().parent
    adapters, problems = [], []
    for i, adapter in enumerate(site.adapters):
        try:  # relative paths (a map file, a certificate) are only known now
            adapters.append(adapter.with_base_dir(base))
        except ValidationError as err:
            problems += [f"adapters[{i}].{p}" for p in format_errors(err)]
    if problems:
        raise ConfigError(str(path), problems)
    try:
        _one_energy_source(adapters)  # again: a map file read just now may add energy
    except ValueError as err:
        raise ConfigError(str(path), [str(err)]) from err
    site.adapters = adapters
    return site
