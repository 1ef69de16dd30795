"""Registers as a map file and a site config write them, and as the adapter polls them.

One register shape serves both: a map file's ``registers:`` (with the map's ``defaults:``)
and an adapter's own ``registers:`` (which may also name the ``machine`` a channel measures).
Once the defaults are applied a register becomes a :class:`Point`, a plain frozen record the
planner and the decoder work on without pydantic in the polling loop.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...sdk import check_unit, signal_kind

Function = Literal["coil", "discrete", "holding", "input"]
DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
Order = Literal["big", "little"]

FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
BIT_FUNCTIONS = frozenset({"coil", "discrete"})
WORDS: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
FUNCTION_WORDS: dict[str, str] = {
    "coil": "coil",
    "discrete": "discrete input",
    "holding": "holding register",
    "input": "input register",
}
SIGNAL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_ADDRESS = 0xFFFF


class RegisterDefaults(BaseModel):
    """What a register says when it says nothing: a map's ``defaults:`` section."""

    model_config = ConfigDict(extra="forbid")

    function: Function = Field(
        default="holding",
        description="`coil` (FC1), `discrete` (FC2), `holding` (FC3) or `input` (FC4).",
    )
    type: DataType = Field(
        default="uint16",
        description=(
            "`bool` (coils and discrete inputs only), `int16`, `uint16`, `int32`, `uint32`, "
            "`int64`, `uint64`, `float32`, `float64`."
        ),
    )
    word_order: Order = Field(
        default="big", description="`big`: most significant 16-bit word first; `little`: last."
    )
    byte_order: Order = Field(
        default="big", description="Byte order inside each 16-bit word (`big` is the standard)."
    )
    poll_interval_ms: int | None = Field(
        default=None, ge=50, description="Poll interval; unset: the adapter's `poll_interval_ms`."
    )


class RegisterSpec(BaseModel):
    """One register (or coil) read as one signal; unset fields come from the defaults."""

    model_config = ConfigDict(extra="forbid")

    address: int = Field(
        ge=0,
        le=MAX_ADDRESS,
        description=(
            "Protocol address, 0-based: a manual's 30001 or 40001 is 0, 30002 is 1 (hex "
            "like `0x0048` is fine)."
        ),
    )
    signal: str = Field(
        description="Signal name: from the vocabulary (see the wire contract) or your own."
    )
    unit: str | None = Field(
        default=None,
        description=(
            "Unit of the value after scale/offset, converted to the signal's canonical unit "
            "(kWh to Wh...). Checked at load time. Unset: already canonical."
        ),
    )
    function: Function | None = Field(
        default=None, description="`coil`, `discrete`, `holding` or `input`; unset: the default."
    )
    type: DataType | None = Field(default=None, description="Data type; unset: the default.")
    word_order: Order | None = Field(default=None, description="Word order; unset: the default.")
    byte_order: Order | None = Field(default=None, description="Byte order; unset: the default.")
    scale: float = Field(default=1.0, description="Multiply the raw value (before `offset`).")
    offset: float = Field(default=0.0, description="Add to the value after `scale`.")
    poll_interval_ms: int | None = Field(
        default=None, ge=50, description="Poll interval of this register; unset: the default."
    )
    description: str | None = Field(
        default=None, description="Free text, e.g. the manual's name for the register."
    )

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        if isinstance(v, str):  # "0x0048" quoted in YAML
            try:
                return int(v, 0)
            except ValueError:
                raise ValueError(f"address {v!r} is not a number (like 12 or 0x000C)") from None
        return v

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        if not SIGNAL_NAME.match(v):
            raise ValueError(
                f"signal {v!r} is not a signal name (lowercase letters, digits and _, "
                "starting with a letter)"
            )
        return v

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v

    def resolved(self, defaults: RegisterDefaults) -> ResolvedRegister:
        """This register with the defaults applied, checked for a consistent type."""
        function = self.function or defaults.function
        dtype = self.type or defaults.type
        out = ResolvedRegister(
            address=self.address,
            signal=self.signal,
            unit=self.unit,
            function=function,
            type=dtype,
            word_order=self.word_order or defaults.word_order,
            byte_order=self.byte_order or defaults.byte_order,
            scale=self.scale,
            offset=self.offset,
            poll_interval_ms=self.poll_interval_ms or defaults.poll_interval_ms,
        )
        out.check()
        return out


class ConfigRegisterSpec(RegisterSpec):
    """A register written in the site config: may say which machine it measures."""

    machine: str | None = Field(
        default=None,
        description=(
            "The machine this register measures (a meter channel on another machine's "
            "supply); unset: the device's `machine`."
        ),
    )

    @model_validator(mode="after")
    def _fits(self) -> Self:
        # a register in the site config takes the fixed defaults: check it now, at its path
        self.resolved(RegisterDefaults())
        return self


@dataclass(frozen=True, slots=True)
class ResolvedRegister:
    """A register with every field known (defaults applied), not yet tied to a device."""

    address: int
    signal: str
    unit: str | None
    function: Function
    type: DataType
    word_order: Order
    byte_order: Order
    scale: float
    offset: float
    poll_interval_ms: int | None

    @property
    def size(self) -> int:
        """Registers (or bits, for a coil or discrete input) the value takes."""
        return WORDS[self.type]

    @property
    def end(self) -> int:
        return self.address + self.size

    def check(self) -> None:
        """Raise ValueError when type, function, signal and address do not fit together."""
        bits = self.function in BIT_FUNCTIONS
        if bits and self.type != "bool":
            raise ValueError(
                f"type {self.type} on a {FUNCTION_WORDS[self.function]}: coils and discrete "
                "inputs are single bits, use type bool"
            )
        if not bits and self.type == "bool":
            raise ValueError(
                f"type bool on a {FUNCTION_WORDS[self.function]}: bool is for coils and "
                "discrete inputs; a register holding 0/1 is uint16"
            )
        if self.end - 1 > MAX_ADDRESS:
            raise ValueError(
                f"type {self.type} needs {self.size} registers from address {self.address}, "
                f"past the last address {MAX_ADDRESS}"
            )
        kind = signal_kind(self.signal)
        if self.type == "bool" and kind in ("gauge", "counter", "text"):
            raise ValueError(
                f"signal {self.signal!r} is a {kind} and a {FUNCTION_WORDS[self.function]} "
                "gives true/false: use a boolean signal (online) or your own signal name"
            )
        if self.type != "bool" and kind == "text":
            raise ValueError(f"signal {self.signal!r} is text; a register gives a number")


@dataclass(frozen=True, slots=True)
class Point:
    """One register of one device as the adapter polls it: where, how to decode, for whom."""

    unit_id: int
    machine: str
    signal: str
    function: Function
    address: int
    type: DataType
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    poll_interval_ms: int = 1000

    @property
    def size(self) -> int:
        """Registers (or bits) the value takes."""
        return WORDS[self.type]

    @property
    def end(self) -> int:
        return self.address + self.size

    @property
    def where(self) -> str:
        """The register in words for a log line: unit id, function, address, signal."""
        return (
            f"unit {self.unit_id} {FUNCTION_WORDS[self.function]} {self.address} "
            f"(FC{FUNCTION_CODES[self.function]}, {self.machine}/{self.signal})"
        )

    @classmethod
    def of(
        cls, reg: ResolvedRegister, *, unit_id: int, machine: str, poll_interval_ms: int
    ) -> Point:
        return cls(
            unit_id=unit_id,
            machine=machine,
            signal=reg.signal,
            function=reg.function,
            address=reg.address,
            type=reg.type,
            word_order=reg.word_order,
            byte_order=reg.byte_order,
            scale=reg.scale,
            offset=reg.offset,
            unit=reg.unit,
            poll_interval_ms=reg.poll_interval_ms or poll_interval_ms,
        )


def overlap(regs: list[tuple[str, ResolvedRegister]]) -> str | None:
    """The first pair of registers (named) sharing an address of one function, in words."""
    by_function: dict[str, list[tuple[str, ResolvedRegister]]] = {}
    for named in regs:
        by_function.setdefault(named[1].function, []).append(named)
    for function, items in by_function.items():
        items.sort(key=lambda n: n[1].address)
        for (name_a, a), (name_b, b) in itertools.pairwise(items):
            if b.address < a.end:
                return (
                    f"{name_b} ({FUNCTION_WORDS[function]} {b.address}, {b.signal}) overlaps "
                    f"{name_a} ({a.type} at {a.address}..{a.end - 1}, {a.signal})"
                )
    return None
