"""InfluxDB line protocol for our one schema (see microfactory.contract and docs/wire-contract.md).

Escaping follows what the parsers really do, not only what the reference says, because a line a
parser refuses quarantines the whole batch. Measured on InfluxDB 1.6.7 (Debian) and
VictoriaMetrics (tests/gateway/test_lineprotocol_influx.py proves it on both):

* In a measurement, tag key, tag value or field key, ``\\,`` ``\\=`` ``\\ `` stand for the
  character; any other backslash is kept as written, and there is no escape for the backslash
  itself. InfluxDB 1.x keeps ``\\\\`` as two backslashes while VictoriaMetrics reads one, and a
  backslash right before a delimiter escapes it (a trailing backslash breaks the line). So a
  backslash is written as is only when an ordinary character follows it; one at the end or
  before another backslash, ``,``, ``=`` or space is written as U+FF3C FULLWIDTH REVERSE SOLIDUS.
* A newline cannot be in a name or tag value at all: it is written as U+240A ``␊``.
* In a string field ``\\\\`` and ``\\"`` are the escapes. InfluxDB 1.x accepts a raw newline
  inside the quotes and stores it; VictoriaMetrics (and so possibly other ``/api/v2/write``
  servers) splits the line there, which would let text forge points, so ``keep_newlines=False``
  (the v2 sink) writes it as ``␊`` too.
* Text that cannot be UTF-8 (lone surrogates) gets U+FFFD for each surrogate; an empty tag
  value or key is not allowed by InfluxDB: that tag is left out (it reads back as no tag).
  InfluxDB refuses a tag key ``time``: such a context tag is written as ``_time``. A series key
  over 64 KiB is refused too, so a tag value is cut to its first 1024 characters.

Everything else (tab, CR, other control characters, NUL, quotes, emoji) is stored as is. (At
the start of a line InfluxDB 1.x skips tab and NUL and takes ``#`` for a comment: no escape
exists for that, and our measurement and field keys are constants that never start so.)
Names made only of safe characters (every id the site config allows) skip all of this: the
escaped form of each tag value is cached, so the hot path is a dictionary lookup.
"""

from __future__ import annotations

import re

from microfactory.contract import (
    FIELD_TEXT,
    FIELD_VALUE,
    MEASUREMENT_TELEMETRY,
    TAG_MACHINE,
    TAG_QUALITY,
    TAG_SIGNAL,
    TAG_SITE,
    TAG_UNIT,
)

from .sample import Sample

NEWLINE_SYMBOL = "\u240a"  # ␊ SYMBOL FOR LINE FEED: what a newline becomes where none may be
BACKSLASH_SYMBOL = "\uff3c"  # FULLWIDTH REVERSE SOLIDUS: a backslash no parser reads alike
REPLACEMENT = "\ufffd"  # what a lone surrogate (not encodable as UTF-8) becomes

_SURROGATE = re.compile("[\ud800-\udfff]")
# a backslash is ambiguous at the end or before a backslash or a character that is escaped
# (also before '=' in a measurement, where InfluxDB 1.x reads '\=' as '=' though '=' needs none)
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=[\\,= ]|\Z)")
_TAG_ESCAPE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_MEASUREMENT_ESCAPE = str.maketrans({",": "\\,", " ": "\\ "})
_TAG_SPECIAL = re.compile(r"[,= \\\n]")

MAX_TAG_CHARS = 1024  # nine tags of 1024 characters stay under InfluxDB's 64 KiB series key
_CACHE_MAX = 4096
_CACHED_CHARS = 128
_tag_cache: dict[str, str] = {}


def _plain(v: str) -> str:
    """UTF-8-encodable text: lone surrogates replaced."""
    if v.isascii():
        return v
    return _SURROGATE.sub(REPLACEMENT, v)


def _name(v: str, escapes: dict[int, str]) -> str:
    """A name or tag value on the line: no newline, no backslash a parser could misread."""
    v = v.replace("\n", NEWLINE_SYMBOL)
    return _AMBIGUOUS_BACKSLASH.sub(BACKSLASH_SYMBOL, v).translate(escapes)


def escape_tag(v: str) -> str:
    """A tag key, tag value or field key as written on the line (never empty input)."""
    v = _plain(v[:MAX_TAG_CHARS])
    if _TAG_SPECIAL.search(v) is None:
        return v
    return _name(v, _TAG_ESCAPE)


def escape_measurement(v: str) -> str:
    """A measurement name as written on the line (``=`` needs no escape there)."""
    return _name(_plain(v), _MEASUREMENT_ESCAPE)


def escape_string_field(v: str, *, keep_newlines: bool = True) -> str:
    """A string field value, quoted; see the module docstring for ``keep_newlines``."""
    v = _plain(v)
    if not keep_newlines:
        v = v.replace("\n", NEWLINE_SYMBOL)
    if "\\" in v or '"' in v:
        v = v.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + v + '"'


def _tag(v: str) -> str:
    cached = _tag_cache.get(v)
    if cached is None:
        cached = escape_tag(v)
        if len(v) <= _CACHED_CHARS:  # at most 4096 x 128 characters kept
            if len(_tag_cache) >= _CACHE_MAX:
                _tag_cache.clear()  # context values change over the years: stay bounded
            _tag_cache[v] = cached
    return cached


_MEASUREMENT = escape_measurement(MEASUREMENT_TELEMETRY)
_FIELD_TEXT = escape_tag(FIELD_TEXT)
_FIELD_VALUE = escape_tag(FIELD_VALUE)


def encode(sample: Sample, site: str, *, keep_newlines: bool = True) -> str:
    """One line; tags sorted by key as InfluxDB prefers, empty tags omitted.

    ``keep_newlines=False`` is for servers that split lines inside quoted strings
    (VictoriaMetrics): a newline in text is then written as ``␊``.
    """
    tags = {
        TAG_MACHINE: sample.machine,
        TAG_QUALITY: sample.quality,
        TAG_SIGNAL: sample.signal,
        TAG_SITE: site,
    }
    if sample.unit:
        tags[TAG_UNIT] = sample.unit
    for k, v in sample.tags.items():
        if v and k:
            tags["_time" if k == "time" else k] = v
    escaped = {_tag(k): _tag(v) for k, v in tags.items() if v}
    tag_str = ",".join(f"{k}={escaped[k]}" for k in sorted(escaped))
    if isinstance(sample.value, str):
        field = f"{_FIELD_TEXT}={escape_string_field(sample.value, keep_newlines=keep_newlines)}"
    else:
        field = f"{_FIELD_VALUE}={float(sample.value)!r}"
    return f"{_MEASUREMENT},{tag_str} {field} {sample.ts_ns}"


def encode_batch(samples: list[Sample], site: str, *, keep_newlines: bool = True) -> bytes:
    return "\n".join(encode(s, site, keep_newlines=keep_newlines) for s in samples).encode()
