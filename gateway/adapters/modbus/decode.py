"""Register words to values: data types, word and byte order, scale and offset.

Pure functions on plain lists, so every byte pattern a vendor manual shows can be a test:
230.5 V as a big-endian float32 is the words 0x4366 0x8000.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .plan import Read
from .registers import DataType, Order, Point

_FORMATS: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}


class DecodeProblem(ValueError):
    """A register's content is not a value (NaN, infinity, a short answer)."""


def words_to_bytes(words: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    """The value's bytes, most significant first, from 16-bit words as the device sent them."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    out = bytearray()
    for w in ordered:
        hi, lo = (w >> 8) & 0xFF, w & 0xFF
        out += bytes((hi, lo)) if byte_order == "big" else bytes((lo, hi))
    return bytes(out)


def decode_words(
    words: Sequence[int], dtype: DataType, word_order: Order = "big", byte_order: Order = "big"
) -> int | float:
    """The raw value of ``words`` as ``dtype`` (not scaled); DecodeProblem if it is not one."""
    fmt = _FORMATS.get(dtype)
    if fmt is None:
        raise DecodeProblem(f"type {dtype} is not a register type")
    size = struct.calcsize(fmt) // 2
    if len(words) != size:
        raise DecodeProblem(f"type {dtype} needs {size} registers, got {len(words)}")
    value: int | float = struct.unpack(fmt, words_to_bytes(words, word_order, byte_order))[0]
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeProblem(f"the device reports {value!r} (no valid reading)")
    return value


def point_value(point: Point, raw: Sequence[int] | Sequence[bool]) -> object:
    """The value of ``point`` from its own words (or its one bit), scale and offset applied."""
    if point.type == "bool":
        if len(raw) != 1:
            raise DecodeProblem(f"expected 1 bit, got {len(raw)}")
        return bool(raw[0])
    value = decode_words([int(w) for w in raw], point.type, point.word_order, point.byte_order)
    if point.scale == 1.0 and point.offset == 0.0:
        return value
    return value * point.scale + point.offset


@dataclass(frozen=True, slots=True)
class Decoded:
    """One point of a read: its value, or the problem in words and the raw words."""

    point: Point
    value: object = None
    problem: str | None = None
    raw: tuple[int, ...] = ()


def decode_read(read: Read, values: Sequence[int] | Sequence[bool]) -> list[Decoded]:
    """Every point of ``read`` from the response's registers (or bits), one by one.

    A bit response is padded to a whole byte: only the first ``read.count`` bits count.
    A short answer is a problem of the points past its end, not of the whole read.
    """
    out: list[Decoded] = []
    for p in read.points:
        lo = p.address - read.address
        chunk = values[lo : lo + p.size]
        raw = tuple(int(v) for v in chunk)
        if len(chunk) < p.size:
            out.append(
                Decoded(p, problem=f"the answer has {len(values)} values, too short", raw=raw)
            )
            continue
        try:
            out.append(Decoded(p, point_value(p, chunk), raw=raw))
        except DecodeProblem as problem:
            out.append(Decoded(p, problem=str(problem), raw=raw))
    return out
