"""Register words to values, against byte patterns as vendor manuals print them."""

from __future__ import annotations

import math
import struct

import pytest

from microfactory.gateway.adapters.modbus.decode import (
    DecodeProblem,
    decode_read,
    decode_words,
    point_value,
    words_to_bytes,
)
from microfactory.gateway.adapters.modbus.plan import Read
from microfactory.gateway.adapters.modbus.registers import Point


def test_230_5_volts_as_a_big_endian_float32() -> None:
    assert decode_words([0x4366, 0x8000], "float32") == 230.5


def test_word_order_little_puts_the_most_significant_word_last() -> None:
    assert decode_words([0x8000, 0x4366], "float32", word_order="little") == 230.5


def test_byte_order_little_swaps_the_bytes_of_each_word() -> None:
    assert decode_words([0x6643, 0x0080], "float32", byte_order="little") == 230.5
    assert decode_words([0x0080, 0x6643], "float32", "little", "little") == 230.5


@pytest.mark.parametrize(
    ("words", "dtype", "expected"),
    [
        ([0xFFFF], "int16", -1),
        ([0xFFFF], "uint16", 65535),
        ([0x8000], "int16", -32768),
        ([0xFFFF, 0xFFFE], "int32", -2),
        ([0x0001, 0x0000], "uint32", 65536),
        ([0x0000, 0x0000, 0x0001, 0x0000], "uint64", 65536),
        ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], "int64", -1),
        ([0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], "int64", 2**63 - 1),
        ([0x4059, 0x0000, 0x0000, 0x0000], "float64", 100.0),
    ],
)
def test_integer_and_float_types(words: list[int], dtype: str, expected: float) -> None:
    assert decode_words(words, dtype) == expected  # type: ignore[arg-type]


def test_a_64_bit_counter_with_little_word_order() -> None:
    # 123456789012 Wh = 0x0000_001C_BE99_1A14, least significant word first
    words = [0x1A14, 0xBE99, 0x001C, 0x0000]
    assert decode_words(words, "uint64", word_order="little") == 123456789012


def test_words_to_bytes_is_most_significant_first() -> None:
    assert words_to_bytes([0x0102, 0x0304], "big", "big") == b"\x01\x02\x03\x04"
    assert words_to_bytes([0x0102, 0x0304], "little", "big") == b"\x03\x04\x01\x02"
    assert words_to_bytes([0x0102, 0x0304], "big", "little") == b"\x02\x01\x04\x03"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_problems(value: float) -> None:
    words = list(struct.unpack(">HH", struct.pack(">f", value)))
    with pytest.raises(DecodeProblem, match="no valid reading"):
        decode_words(words, "float32")


def test_wrong_number_of_words_is_a_problem() -> None:
    with pytest.raises(DecodeProblem, match="needs 2 registers, got 1"):
        decode_words([1], "float32")


def _point(**kw: object) -> Point:
    base: dict[str, object] = {
        "unit_id": 1,
        "machine": "press-1",
        "signal": "energy_active",
        "function": "holding",
        "address": 0,
        "type": "uint32",
    }
    base.update(kw)
    return Point(**base)  # type: ignore[arg-type]


def test_scale_then_offset() -> None:
    p = _point(scale=0.1, offset=-5.0)
    assert point_value(p, [0x0000, 0x0064]) == pytest.approx(100 * 0.1 - 5.0)


def test_without_scale_an_integer_stays_an_integer() -> None:
    value = point_value(_point(), [0x0000, 0x0064])
    assert value == 100 and isinstance(value, int)


def test_bool_from_a_bit() -> None:
    p = _point(function="coil", type="bool", signal="online")
    assert point_value(p, [True]) is True
    assert point_value(p, [False]) is False


def test_a_read_decodes_each_point_from_its_own_offset_and_isolates_a_nan() -> None:
    a = _point(address=10, type="float32", signal="voltage_l1")
    b = _point(address=14, type="float32", signal="voltage_l2")
    c = _point(address=16, type="int16", signal="temperature")
    read = Read(1, "holding", 10, 7, (a, b, c))
    nan = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    words = [0x4366, 0x8000, 0, 0, *nan, 0xFFF6]
    out = decode_read(read, words)
    assert out[0].value == 230.5 and out[0].problem is None
    assert out[1].problem is not None and "no valid reading" in out[1].problem
    assert out[1].raw == tuple(nan)
    assert out[2].value == -10


def test_bits_past_the_count_are_ignored_and_a_short_answer_is_per_point() -> None:
    a = _point(function="discrete", type="bool", signal="online", address=3)
    b = _point(function="discrete", type="bool", signal="door", address=5)
    read = Read(1, "discrete", 3, 3, (a, b))
    out = decode_read(read, [True, False])  # two bits where three were asked
    assert out[0].value is True
    assert out[1].problem is not None and "too short" in out[1].problem
