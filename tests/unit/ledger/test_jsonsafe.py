"""The JSON nesting scan: exact on well-formed JSON, never fooled by strings, safe on garbage."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ledger.jsonsafe import DEFAULT_MAX_DEPTH, JsonTooDeep, check_depth, loads, nesting_depth
from ledger.recursion import cap_recursion_limit

# A failing scan must end in RecursionError, not in a crash of the test process.
cap_recursion_limit()


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def reference_depth(value: object) -> int:
    """The nesting depth of a parsed value, counted the obvious way."""
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"a"', 0),
        ("[]", 1),
        ("{}", 1),
        ("[[], {}]", 2),
        ('{"a": [1, {"b": []}]}', 4),
        (nested(7), 7),
        ("[[]][[[]]]", 3),  # not JSON, but the depth is still that of its deepest part
    ],
)
def test_depth_of_well_formed_documents(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth
    assert nesting_depth(text.encode()) == depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('"[[[[[["', 0),
        ('["]]]]", "[[[["]', 1),
        ('{"[": "{{{", "k": ["}"]}', 2),
        (r'["\"[[[[", "\\", []]', 2),  # an escaped quote does not end the string
        (r'["\\\"[[", 1]', 1),  # \\ then \" : still inside the string
        (r'["a\\", [[1]]]', 3),  # the string ends after an escaped backslash
        ('["\\u005b\\u005b", 1]', 1),  # escaped brackets are characters of a string
        ('["é[ü", ["€"]]', 2),  # multi-byte UTF-8 next to brackets
    ],
)
def test_brackets_inside_strings_do_not_count(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth
    assert nesting_depth(text.encode("utf-8")) == depth
    assert reference_depth(json.loads(text)) == depth


def test_utf16_and_utf32_documents_are_scanned_as_json_loads_reads_them() -> None:
    # U+225B in UTF-16-LE is the bytes 5B 22: '[' and '"' if the bytes were read as ASCII.
    text = '["\u225b\u225b", [[1]]]'
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"):
        raw = text.encode(encoding)
        assert json.loads(raw) == ["\u225b\u225b", [[1]]]
        assert nesting_depth(raw) == 3, encoding


def test_unclosed_brackets_count_in_full() -> None:
    """The parser recurses into every bracket it opens before it finds the document
    truncated: an unterminated document is as deep as everything it opens."""
    assert nesting_depth("[" * 90_000) == 90_000
    assert nesting_depth("[[1]" + "[" * 50) == 52
    assert nesting_depth('["unterminated [[[[') >= 1


def test_limit_stops_the_scan_early() -> None:
    assert nesting_depth(nested(1000), limit=32) == 33
    assert nesting_depth(nested(32), limit=32) == 32


def test_depth_exactly_at_the_bound_passes_and_one_more_is_refused() -> None:
    check_depth(nested(32), 32)
    assert loads(nested(32), max_depth=32) == json.loads(nested(32))
    with pytest.raises(JsonTooDeep) as refused:
        check_depth(nested(33), 32)
    assert refused.value.code == "json-too-deep"
    assert refused.value.context == {"limit": 32}
    assert isinstance(refused.value, ValueError)  # refused wherever bad JSON is


def test_objects_count_like_arrays() -> None:
    text = '{"a":' * 33 + "1" + "}" * 33
    with pytest.raises(JsonTooDeep):
        check_depth(text, 32)
    check_depth(text, 33)


def test_loads_refuses_a_bomb_without_recursing() -> None:
    bomb = b"[" * 90_000
    with pytest.raises(JsonTooDeep):
        loads(bomb)
    with pytest.raises(JsonTooDeep):
        loads(nested(90_000))


def test_loads_keeps_json_errors() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads("[1,")
    with pytest.raises(UnicodeDecodeError):
        loads(b"\xff\xfe\x00")
    assert loads('{"a": [1, 2]}') == {"a": [1, 2]}
    assert DEFAULT_MAX_DEPTH >= 16


def test_the_scan_measures_large_documents_of_the_worst_shapes() -> None:
    """8 MiB (the request body limit) of the shapes that would cost a byte-by-byte scanner
    most: measured exactly (the scan is a few C-speed passes, figures in docs/benchmarks.md)."""
    size = 8 * 1024 * 1024
    assert nesting_depth(b"[" + b"[]," * (size // 3) + b"[]]", limit=32) == 2
    assert nesting_depth(b"[" + b'"' + b"a" * size + b'"]', limit=32) == 1
    assert nesting_depth(b"[" + b'"\\"",' * (size // 5) + b"1]", limit=32) == 1
    assert nesting_depth(nested(31).encode() * (size // 64), limit=32) == 31
    assert nesting_depth(b"[" * size, limit=32) > 32


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9\u225b'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), children, max_size=4)
    ),
    max_leaves=40,
)


@given(json_values)
def test_depth_matches_the_parsed_value(value: object) -> None:
    text = json.dumps(value)
    assert nesting_depth(text) == reference_depth(value)
    assert nesting_depth(json.dumps(value, ensure_ascii=False).encode()) == reference_depth(value)


# The scan as it was before it looked for strings among the quotes and brackets only (issue
# 15: the request bodies' scan cost ~4 µs per event of a batch): the new one must say the same
# on every document without a backslash outside a string (on JSON, it says the parsed depth:
# test_depth_matches_the_parsed_value).
_OLD_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OLD_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _old_depth(data: bytes) -> int:
    brackets = _OLD_STRING.sub(b"", data).translate(
        bytes.maketrans(b"{}", b"[]"), _OLD_NOT_BRACKETS
    )
    passes = 0
    while b"[]" in brackets:
        passes += 1
        brackets = brackets.replace(b"[]", b"")
    return passes + brackets.count(b"[")


@given(st.text(alphabet='[]{}"a,: ', max_size=200))
@example('["][]')  # a quote never closed: the brackets after it still count
@example('"[]"[')
@example('"[""')  # the quote never closed comes after two side by side
@example('"[""]"')  # two strings side by side, a bracket in each
def test_the_scan_says_what_the_whole_document_scan_said_on_garbage(text: str) -> None:
    """Without backslashes (outside strings JSON has none), any text: the same depth."""
    assert nesting_depth(text) == _old_depth(text.encode())


@given(st.text(alphabet='[]{}"\\a', max_size=200))
def test_garbage_with_backslashes_is_never_scanned_shallower_than_a_parser_goes(
    text: str,
) -> None:
    """Where a backslash stands outside a string the parser stops there: the scan counts at
    least every bracket still open at that point."""
    data = text.encode()
    assert nesting_depth(data) >= _open_before_first_stray_backslash(data)


def _open_before_first_stray_backslash(data: bytes) -> int:
    """The deepest nesting a parser reaches before the first backslash outside a string (or
    the end), scanning as JSON does: strings with their escapes skipped."""
    depth = deepest = 0
    at, end = 0, len(data)
    while at < end:
        byte = data[at : at + 1]
        if byte == b'"':
            at += 1
            while at < end and data[at : at + 1] != b'"':
                at += 2 if data[at : at + 1] == b"\\" else 1
        elif byte == b"\\":
            break
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth = max(0, depth - 1)
        at += 1
    return deepest
