"""Site-config model of the MQTT adapter (``type: mqtt``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...sdk import check_unit, signal_kind
from .broker import BrokerAdapterConfig

if TYPE_CHECKING:
    pass

PLACEHOLDERS = ("machine", "signal")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")
PayloadFormat = Literal["json", "text", "csv", "keyvalue"]
MapTarget = float | str

# PyYAML reads an unquoted ON / OFF / yes / no / true / false as a boolean: a value_map key
# written that way stands for every word YAML would have read as that boolean.
_YAML_TRUE = ("true", "on", "yes")
_YAML_FALSE = ("false", "off", "no")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _words(value: object) -> list[str]:
    """Payload words of a config key or word list, folded (see ``_YAML_TRUE``)."""
    if isinstance(value, bool):
        return list(_YAML_TRUE if value else _YAML_FALSE)
    if isinstance(value, int | float | str):
        return [str(value).strip().casefold()]
    raise ValueError(f"expected a word, got {type(value).__name__} {value!r:.40}")


def _value_map(raw: object) -> object:
    """``value_map`` keys folded to lower case; booleans read by YAML put back as words."""
    if not isinstance(raw, dict):
        return raw
    implied: dict[str, object] = {}  # from keys YAML turned into booleans
    explicit: dict[str, object] = {}
    for key, target in raw.items():
        value = float(target) if isinstance(target, bool) else target
        if isinstance(key, bool):
            implied.update(dict.fromkeys(_words(key), value))
            continue
        (word,) = _words(key)
        if word in explicit:
            raise ValueError(f"value_map has the word {word!r} twice (keys are case-insensitive)")
        explicit[word] = value
    return {**implied, **explicit}


def _check_map_targets(
    where: str, signal: str | None, value_map: dict[str, MapTarget] | None
) -> None:
    """A value_map must give text to a text signal and numbers to the others."""
    if not value_map or not signal:
        return
    kind = signal_kind(signal)
    for word, target in value_map.items():
        if kind == "text" and not isinstance(target, str):
            raise ValueError(
                f"{where}: value_map maps {word!r} to {target!r} for text signal {signal!r}; "
                "give a word (quote it: YAML reads off/on/no/yes as booleans)"
            )
        if kind in ("gauge", "counter", "boolean") and isinstance(target, str):
            raise ValueError(
                f"{where}: value_map maps {word!r} to the word {target!r} for numeric signal "
                f"{signal!r}; give a number"
            )
        if kind == "boolean" and target not in (0, 1):
            raise ValueError(
                f"{where}: value_map maps {word!r} to {target!r} for boolean signal "
                f"{signal!r}; give 1 or 0"
            )


_VALUE_MAP_DESCRIPTION = (
    "Words of the payload mapped to values, e.g. `{ON: 1, OFF: 0}` or `{RUN: running}`;"
    " keys are case-insensitive (JSON `true`/`false` match keys `true`/`false`). A word"
    " not in the map dead-letters the message."
)


class TimestampSpec(_Section):
    """Where the source time is in the payload; without ``path`` the receive time is used."""

    path: str | None = Field(
        default=None,
        description=(
            "Dotted path of the time in the payload (`keyvalue`: the key); unset: receive time."
        ),
    )
    column: int | None = Field(
        default=None,
        ge=0,
        description=(
            "`csv`: the column holding the time, counted from 0; its entry in `columns` is"
            " `null`. Unset: receive time."
        ),
    )
    format: Literal["auto", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601"] = Field(
        default="auto",
        description=(
            "`epoch_s`/`_ms`/`_us`/`_ns` numbers, `iso8601` text with a time zone (or"
            " without one, given `timezone`), or `auto` (numbers by magnitude, text as ISO"
            " 8601)."
        ),
    )
    timezone: str | None = Field(
        default=None,
        description=(
            "IANA zone (e.g. `Europe/Paris`) of ISO times written without one, as Tasmota"
            " sends them; DST by zoneinfo: a time in the spring-forward gap is dead-lettered,"
            " an ambiguous autumn time is taken as its first occurrence. Unset: such times"
            " are dead-lettered."
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(
                f"unknown time zone {v!r}: expected an IANA name such as Europe/Paris "
                "(from the system's tzdata, /usr/share/zoneinfo)"
            ) from err
        return v


class FieldSpec(_Section):
    """One field of an object payload (a JSON path, or a `keyvalue` key) mapped to one signal."""

    path: str = Field(
        description=(
            "Dotted path into the JSON object, e.g. `power.value`; digits index "
            "arrays (`phases.0`); `keyvalue`: the key (`V1`). A missing field is skipped."
        )
    )
    signal: str = Field(description="Signal name.")
    unit: str | None = Field(
        default=None,
        description="Unit of the value, converted to the signal's canonical unit (checked at load time).",
    )
    unit_path: str | None = Field(
        default=None,
        description=(
            "Path of a unit given in the payload; wins over `unit` when present and"
            " text (checked per message: an unknown or unconvertible unit is dead-lettered)."
        ),
    )
    scale: float = Field(
        default=1.0, description="Multiply numeric values (before unit conversion)."
    )
    offset: float = Field(default=0.0, description="Add to numeric values after `scale`.")
    value_map: dict[str, MapTarget] | None = Field(default=None, description=_VALUE_MAP_DESCRIPTION)

    _map = field_validator("value_map", mode="before")(classmethod(lambda cls, v: _value_map(v)))

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v

    @model_validator(mode="after")
    def _targets(self) -> FieldSpec:
        _check_map_targets(f"field {self.path!r}", self.signal, self.value_map)
        return self


class ValueSpec(_Section):
    """A payload carrying one value (the signal comes from the topic or ``signal``)."""

    path: str | None = Field(
        default="value",
        description=(
            "Dotted path of the value; `null`: the whole payload is the value (then"
            " the receive time is used). `format: text` always reads the whole payload."
        ),
    )
    unit: str | None = Field(default=None, description="Unit when the payload gives none.")
    unit_path: str | None = Field(
        default="unit",
        description=(
            "Path of a unit in the payload; wins over `unit` when present and text"
            " (`format: text`: the unit written after the number, `230.5 V`)."
        ),
    )
    scale: float = Field(
        default=1.0, description="Multiply numeric values (before unit conversion)."
    )
    offset: float = Field(default=0.0, description="Add to numeric values after `scale`.")
    value_map: dict[str, MapTarget] | None = Field(default=None, description=_VALUE_MAP_DESCRIPTION)

    _map = field_validator("value_map", mode="before")(classmethod(lambda cls, v: _value_map(v)))


class CsvColumn(_Section):
    """One column of a `csv` line mapped to one signal."""

    signal: str = Field(description="Signal name.")
    unit: str | None = Field(
        default=None,
        description=(
            "Unit of the column, converted to the signal's canonical unit (checked at load"
            " time); a cell such as `230.5 V` gives its own."
        ),
    )
    scale: float = Field(
        default=1.0, description="Multiply numeric values (before unit conversion)."
    )
    offset: float = Field(default=0.0, description="Add to numeric values after `scale`.")
    value_map: dict[str, MapTarget] | None = Field(default=None, description=_VALUE_MAP_DESCRIPTION)

    _map = field_validator("value_map", mode="before")(classmethod(lambda cls, v: _value_map(v)))

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v

    @model_validator(mode="after")
    def _targets(self) -> CsvColumn:
        _check_map_targets(f"column {self.signal!r}", self.signal, self.value_map)
        return self


class AvailabilitySpec(_Section):
    """A topic telling whether a device is connected: an MQTT last will, a status topic."""

    online: list[str] = Field(
        default_factory=lambda: ["online"],
        description="Payload word(s) meaning the device is there (case-insensitive).",
    )
    offline: list[str] = Field(
        default_factory=lambda: ["offline"],
        description=(
            "Payload word(s) meaning the device is gone, e.g. the last will the broker"
            " publishes for it (case-insensitive)."
        ),
    )
    path: str | None = Field(
        default=None,
        description=(
            'Dotted path of the word in a JSON object payload (`{"status": "offline"}`);'
            " unset: the whole payload is the word."
        ),
    )

    @field_validator("online", "offline", mode="before")
    @classmethod
    def _word_list(cls, v: object) -> object:
        items = v if isinstance(v, list) else [v]
        words = [w for item in items for w in _words(item)]
        if not words or not all(words):
            raise ValueError("expected at least one non-empty word")
        return words

    @model_validator(mode="after")
    def _disjoint(self) -> AvailabilitySpec:
        both = set(self.online) & set(self.offline)
        if both:
            raise ValueError(f"words both online and offline: {sorted(both)}")
        return self


class Subscription(_Section):
    topic: str = Field(
        description=(
            "MQTT topic filter with `+`/`#` wildcards; a whole level may be "
            "`{machine}` or `{signal}`, which matches like `+` and captures the "
            "level."
        )
    )
    machine: str | None = Field(
        default=None,
        description=(
            "Machine of every message on this topic; or use a `{machine}` level "
            "(exactly one of the two)."
        ),
    )
    signal: str | None = Field(
        default=None,
        description=(
            "For `value` subscriptions: the signal; or use a `{signal}` level "
            "(exactly one of the two)."
        ),
    )
    qos: Literal[0, 1, 2] = Field(
        default=1,
        description=(
            "Subscription QoS. With 1 or 2 the PUBACK is sent only once the samples"
            " are in the spool."
        ),
    )
    format: PayloadFormat = Field(
        default="json",
        description=(
            "Payload format: `json` (with `fields` or `value`), `text` (the whole payload is"
            " one value, read with `value`: `230.5`, `230.5 V`, `ON` with a `value_map`),"
            " `csv` (one line, read with `columns`) or `keyvalue` (`V1=230.5 P=1200`, read"
            " with `fields`, `path` being the key)."
        ),
    )
    timestamp: TimestampSpec = Field(
        default_factory=TimestampSpec, description="Where the source time is."
    )
    fields: list[FieldSpec] = Field(
        default_factory=list,
        description="Object payload (`json`, `keyvalue`): one entry per field to read.",
    )
    value: ValueSpec | None = Field(
        default=None,
        description="One value per message (`json`, `text`; exclusive with `fields`).",
    )
    columns: list[CsvColumn | None] = Field(
        default_factory=list,
        description=(
            "`csv`: the line's columns in order, each a signal name, a column section"
            " (`{signal: current_l1, unit: mA}`) or `null` to skip it."
        ),
    )
    delimiter: str = Field(
        default=",",
        description='`csv`: the one character between values (`,`, `;`, a tab `"\\t"`).',
    )
    availability: AvailabilitySpec | None = Field(
        default=None,
        description=(
            "This topic says whether the machine's device is online (Tasmota's"
            " `tele/<topic>/LWT` `Online`/`Offline`, Home Assistant's `online`/`offline`):"
            " each message gives a sample of the signal `online` (1/0), and offline marks the"
            " device offline at once. Exclusive with `fields`/`value`/`columns`."
        ),
    )
    stale_after_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "The machine's device is stale past this many seconds without data on this"
            " topic; a gap covers the silence when data comes back. Unset: the adapter's"
            " `stale_after_s`."
        ),
    )
    signals: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Rename captured `{signal}` levels, e.g. `energy_total: energy_active`;"
            " levels not listed are used as they are."
        ),
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or len(v.encode()) > 65535:
            raise ValueError("expected a non-empty MQTT topic filter")
        levels = v.split("/")
        for i, level in enumerate(levels):
            names = _PLACEHOLDER.findall(level)
            if names and level != "{" + names[0] + "}":
                raise ValueError(f"placeholder must fill a whole topic level, got level {level!r}")
            for name in names:
                if name not in PLACEHOLDERS:
                    raise ValueError(
                        f"unknown placeholder {{{name}}} (expected {{machine}} or {{signal}})"
                    )
            if ("#" in level and (level != "#" or i != len(levels) - 1)) or (
                "+" in level and level != "+"
            ):
                raise ValueError(f"invalid wildcard in topic level {level!r}")
        for name in PLACEHOLDERS:
            if v.count("{" + name + "}") > 1:
                raise ValueError(f"placeholder {{{name}}} appears more than once")
        return v

    @field_validator("columns", mode="before")
    @classmethod
    def _column_names(cls, v: object) -> object:
        if isinstance(v, list):
            return [{"signal": c} if isinstance(c, str) else c for c in v]
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        if len(v) != 1 or v in '"\r\n' or v.isalnum():
            raise ValueError(
                f"expected one character that is not a letter, digit, quote or newline, got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _shape(self) -> Subscription:
        where = f"topic {self.topic!r}"
        has_machine = "{machine}" in self.topic
        if has_machine == (self.machine is not None):
            raise ValueError(
                f"{where}: give the machine either as 'machine' or as a {{machine}} "
                "topic level (exactly one of them)"
            )
        given = [
            name
            for name, present in (
                ("fields", bool(self.fields)),
                ("value", self.value is not None),
                ("columns", bool(self.columns)),
                ("availability", self.availability is not None),
            )
            if present
        ]
        if self.availability is not None:
            self._check_availability(where, given)
            return self
        wanted = {"json": ("fields", "value"), "text": ("value",), "csv": ("columns",)}.get(
            self.format, ("fields",)
        )
        if self.format == "json" and set(given) <= {"fields", "value"} and len(given) != 1:
            raise ValueError(
                f"{where}: give either 'fields' (JSON object payload) "
                "or 'value' (one value per message), not both or neither"
            )
        if len(given) != 1 or given[0] not in wanted:
            options = " or ".join(f"'{w}'" for w in wanted)
            raise ValueError(
                f"{where}: format {self.format} takes {options} (exactly one of "
                f"fields/value/columns/availability), got {', '.join(given) or 'none'}"
            )
        if self.value is not None and ("{signal}" in self.topic) == (self.signal is not None):
            raise ValueError(
                f"{where}: a 'value' subscription needs its signal either as "
                "'signal' or as a {signal} topic level (exactly one of them)"
            )
        if self.value is not None and self.signal is not None:
            _check_map_targets(f"{where} value", self.signal, self.value.value_map)
            if self.value.unit is not None:
                check_unit(self.signal, self.value.unit)
        self._check_timestamp(where)
        if self.format == "text":
            assert self.value is not None
            if "path" in self.value.model_fields_set and self.value.path is not None:
                raise ValueError(
                    f"{where}: format text reads the whole payload; value.path must be null, "
                    f"got {self.value.path!r}"
                )
            if "unit_path" in self.value.model_fields_set and self.value.unit_path is not None:
                raise ValueError(
                    f"{where}: format text takes the unit written after the number "
                    f"(230.5 V); remove value.unit_path ({self.value.unit_path!r})"
                )
            self.value = self.value.model_copy(update={"path": None, "unit_path": None})
        if self.format == "csv":
            self._check_columns(where)
        elif "delimiter" in self.model_fields_set:
            raise ValueError(f"{where}: 'delimiter' is for format csv")
        return self

    def _check_timestamp(self, where: str) -> None:
        ts = self.timestamp
        if self.format == "text" and (ts.path is not None or ts.column is not None):
            raise ValueError(
                f"{where}: a text payload holds no time; remove timestamp.path (receive time)"
            )
        if self.format == "csv" and ts.path is not None:
            raise ValueError(
                f"{where}: format csv takes the time from timestamp.column, not "
                f"timestamp.path ({ts.path!r})"
            )
        if self.format != "csv" and ts.column is not None:
            raise ValueError(f"{where}: timestamp.column is for format csv")
        if ts.timezone is not None and ts.path is None and ts.column is None:
            raise ValueError(
                f"{where}: timestamp.timezone ({ts.timezone}) applies to a time read from "
                "the payload; set timestamp.path"
            )

    def _check_columns(self, where: str) -> None:
        if not any(c is not None for c in self.columns):
            raise ValueError(f"{where}: columns maps no column to a signal")
        column = self.timestamp.column
        if column is not None and column < len(self.columns) and self.columns[column] is not None:
            raise ValueError(
                f"{where}: column {column} is the timestamp column (timestamp.column); "
                f"write null for it in columns, not {self.columns[column].signal!r}"  # type: ignore[union-attr]
            )

    def _check_availability(self, where: str, given: list[str]) -> None:
        if given != ["availability"]:
            raise ValueError(
                f"{where}: an 'availability' subscription reads only the device's status; "
                f"remove {', '.join(g for g in given if g != 'availability')}"
            )
        extra = sorted(
            {"format", "timestamp", "signal", "signals", "stale_after_s", "delimiter"}
            & self.model_fields_set
        )
        if extra:
            raise ValueError(
                f"{where}: an 'availability' subscription takes none of {', '.join(extra)} "
                "(stale_after_s belongs on the data subscriptions or the adapter)"
            )

    @property
    def filter(self) -> str:
        return _PLACEHOLDER.sub("+", self.topic)

    def signals_referenced(self) -> set[str]:
        """The signals this subscription writes, where the config names them."""
        if self.availability is not None:
            return {"online"}
        names = {f.signal for f in self.fields} | {c.signal for c in self.columns if c}
        if self.value is not None and self.signal is not None:
            names.add(self.signal)
        return names


class MqttAdapterConfig(BrokerAdapterConfig):
    type: Literal["mqtt"] = Field(default="mqtt", description="`mqtt`.")
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1",
        description=(
            "MQTT version; with 5 the broker may keep receive_maximum messages in flight to "
            "the gateway (3.1.1 leaves that to the broker's config, Mosquitto: 20)"
        ),
    )
    receive_maximum: int = Field(
        default=10_000, ge=1, le=65535, description="MQTT 5: unacknowledged messages in flight"
    )
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=0,
        le=2**32 - 1,
        description="MQTT 5: how long the broker keeps "
        "the session (and queues messages) while the gateway is away",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024, ge=16, description="Larger messages are dead-lettered unread."
    )
    subscriptions: list[Subscription] = Field(
        min_length=1, description="Topic filters and how to read their payloads (at least one)."
    )
    stale_after_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Every machine's device is stale past this many seconds without data (a"
            " subscription's own `stale_after_s` wins); unset: devices are never stale."
        ),
    )

    def machines_referenced(self) -> set[str]:
        return {s.machine for s in self.subscriptions if s.machine}

    def signals_referenced(self) -> set[tuple[str, str]]:
        return {
            (s.machine, signal)
            for s in self.subscriptions
            if s.machine
            for signal in s.signals_referenced()
        }
