"""Line-protocol escaping, character by character (pure; the real servers are in
test_lineprotocol_influx.py). The expected stored text is the rule of docs/wire-contract.md,
written here independently of the encoder, plus a model of each parser's unescaping."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from microfactory.gateway.lineprotocol import (
    MAX_TAG_CHARS,
    encode,
    encode_batch,
    escape_measurement,
    escape_string_field,
    escape_tag,
)
from microfactory.gateway.sample import Sample

FW = "\uff3c"  # FULLWIDTH REVERSE SOLIDUS: what an ambiguous backslash becomes
NL = "\u240a"  # ␊ what a newline becomes in a tag

# characters that break naive encoders, drawn often
NASTY = ["\\", "\\\\", '"', "'", "\n", "\r", "\r\n", "\t", ",", "=", " ", "\x00", "\x01", "\x7f"]
NASTY += ["😀", "é", "\u2028", "\ud800", "\udfff", FW, NL, "#", "\\ ", "\\,", "\\="]
ANY_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.lists(
        st.one_of(st.sampled_from(NASTY), st.text(st.characters(), max_size=3)), max_size=8
    ).map("".join),
)


def documented_tag(v: str) -> str:
    """What docs/wire-contract.md says a tag value (or key) is stored as."""
    v = v[:MAX_TAG_CHARS]
    out = []
    for i, c in enumerate(v):
        nxt = v[i + 1] if i + 1 < len(v) else ""
        if "\ud800" <= c <= "\udfff":
            out.append("\ufffd")
        elif c == "\n":
            out.append(NL)
        elif c == "\\" and nxt in ("", "\\", ",", "=", " "):
            out.append(FW)
        else:
            out.append(c)
    return "".join(out)


def influxdb1_unescape(written: str) -> str:
    """InfluxDB 1.6.7: only ``\\,`` ``\\=`` ``\\ `` are escapes, any other backslash stays."""
    return re.sub(r"\\([,= ])", r"\1", written)


def victoriametrics_unescape(written: str) -> str:
    """VictoriaMetrics: ``\\\\`` is a backslash too."""
    return re.sub(r"\\([,= \\])", r"\1", written)


def delimiters(written: str) -> list[int]:
    """Positions InfluxDB 1.x takes for delimiters: a special character not after a backslash."""
    return [i for i, c in enumerate(written) if c in ", =" and (i == 0 or written[i - 1] != "\\")]


@given(ANY_TEXT.filter(bool))
def test_every_tag_text_is_read_back_as_documented_by_both_parsers(v: str) -> None:
    written = escape_tag(v)
    assert written.encode("utf-8")  # never a UnicodeEncodeError in encode_batch
    assert "\n" not in written
    assert not written.endswith("\\")
    assert delimiters(written) == []
    assert influxdb1_unescape(written) == documented_tag(v)
    assert victoriametrics_unescape(written) == documented_tag(v)


@given(ANY_TEXT)
def test_every_string_field_is_one_quoted_token(v: str) -> None:
    for keep in (True, False):
        written = escape_string_field(v, keep_newlines=keep)
        body = written[1:-1]
        assert written[0] == written[-1] == '"'
        # every quote and backslash inside is escaped: the closing quote is the last one
        assert re.fullmatch(r'(?:[^"\\]|\\["\\])*', body, re.DOTALL)
        assert re.sub(r"\\([\"\\])", r"\1", body) == "".join(
            "\ufffd" if "\ud800" <= c <= "\udfff" else (NL if c == "\n" and not keep else c)
            for c in v
        )
        if not keep:
            assert "\n" not in written


def test_backslash_cases() -> None:
    assert escape_tag("a\\b") == "a\\b"  # before an ordinary character: as is
    assert escape_tag("B7\\") == f"B7{FW}"  # trailing: no escape exists
    assert escape_tag("a\\\\b") == f"a{FW}\\b"  # InfluxDB keeps two, VictoriaMetrics one
    assert escape_tag("a\\,b") == f"a{FW}\\,b"
    assert escape_tag("a\\ b") == f"a{FW}\\ b"
    assert escape_tag("a\\=b") == f"a{FW}\\=b"
    assert escape_tag("\\") == FW
    assert escape_tag("\\n") == "\\n"  # the two characters, not a newline


def test_special_characters_in_tags() -> None:
    assert escape_tag("B 7,a=b") == "B\\ 7\\,a\\=b"
    assert escape_tag("line1\nline2") == f"line1{NL}line2"
    assert escape_tag('say "hi"') == 'say\\ "hi"'
    for kept in ("a\tb", "a\rb", "a\x00b", "a\x01b", "a\x7fb", "😀", "é"):
        assert escape_tag(kept) == kept
    assert escape_tag("a\ud800b") == "a\ufffdb"
    assert escape_tag("x" * (MAX_TAG_CHARS + 10)) == "x" * MAX_TAG_CHARS


def test_plain_ids_are_written_as_they_are() -> None:
    for v in ("mill-1", "power_active", "SO-1001-01", "10:milling", "degC", "workshop.a"):
        assert escape_tag(v) is v


def test_measurement_and_string_field() -> None:
    assert escape_measurement("a b,c=d\\") == f"a\\ b\\,c=d{FW}"
    assert escape_string_field('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert escape_string_field("a\nb") == '"a\nb"'
    assert escape_string_field("a\nb", keep_newlines=False) == f'"a{NL}b"'
    assert escape_string_field("") == '""'
    assert escape_string_field("\udc80") == '"\ufffd"'


def test_encode_shape() -> None:
    s = Sample("mill-1", "power_active", 1500.0, "W", 1_700_000_000_000_000_000)
    s.tags["batch"] = "B 7,a=b\\"
    assert encode(s, "shop") == (
        f"telemetry,batch=B\\ 7\\,a\\=b{FW},machine=mill-1,quality=good,signal=power_active,"
        "site=shop,unit=W value=1500.0 1700000000000000000"
    )


def test_empty_and_reserved_tags() -> None:
    s = Sample("m", "state", "on", "", 1, tags={"batch": "", "": "x", "time": "t"})
    assert (
        encode(s, "shop")
        == 'telemetry,_time=t,machine=m,quality=good,signal=state,site=shop text="on" 1'
    )


def test_text_newline_is_one_line_only_when_asked() -> None:
    s = Sample("m", "program", "N10\nforged,machine=x value=1 1", "", 1)
    assert encode_batch([s], "shop").count(b"\n") == 1  # InfluxDB 1.x reads it inside quotes
    assert b"\n" not in encode_batch([s], "shop", keep_newlines=False)


def test_every_line_encodes_to_utf8() -> None:
    s = Sample("m\ud800", "sig\udfff", "t\ud83d", "", 1, tags={"batch": "\udc00"})
    encode_batch([s], "shop").decode("utf-8")


def test_the_escape_cache_stays_bounded() -> None:
    from microfactory.gateway import lineprotocol

    for i in range(10_000):
        encode(Sample("m", "s", 1.0, "W", 1, tags={"batch": f"B{i}", "order": "x" * 5000}), "s")
    assert len(lineprotocol._tag_cache) <= 4096
    assert all(len(k) <= 128 for k in lineprotocol._tag_cache)
