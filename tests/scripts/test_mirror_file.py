"""The audit's mirror file read back (``scripts.audit_log.Mirror``): line by line, a torn last
line dropped and cut off the file, any other broken line refused with its number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts._common import ToolError
from scripts.audit_log import MIRROR_FORMAT, LogIdentity, Mirror
from tests.unit.ledger.test_plain_events import claim_entry

IDENTITY = LogIdentity(31337, "0x" + "11" * 20)
HEADER = json.dumps({"medtrailMirror": MIRROR_FORMAT, **IDENTITY.to_json()}) + "\n"


def entry_line(leaf: int) -> str:
    """A mirror line of one log entry (an insurance claim; the mirror does not check its
    signature, the audit does)."""
    return json.dumps({**claim_entry(), "leafIndex": leaf}, separators=(",", ":"))


def test_a_new_mirror_is_a_header_line(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "mirror.jsonl"
    mirror = Mirror(path, IDENTITY)
    assert (mirror.entries, mirror.next_start) == ([], 0)
    assert path.read_text() == HEADER
    assert Mirror(path, IDENTITY).entries == []


def test_every_whole_line_is_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "mirror.jsonl"
    path.write_text(HEADER + "".join(entry_line(n) + "\n" for n in range(5)))
    mirror = Mirror(path, IDENTITY)
    assert [e.leafIndex for e in mirror.entries] == [0, 1, 2, 3, 4]
    assert mirror.entry(3) is mirror.entries[3]
    assert mirror.next_start == 5


def test_a_torn_last_line_is_dropped_and_cut_off_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mirror.jsonl"
    whole = HEADER + entry_line(0) + "\n" + entry_line(1) + "\n"
    path.write_text(whole + entry_line(2)[:40])  # a run killed mid-write
    mirror = Mirror(path, IDENTITY)
    assert [e.leafIndex for e in mirror.entries] == [0, 1]
    assert mirror.next_start == 2  # fetched again
    assert path.read_text() == whole


def test_a_torn_line_that_is_whole_json_is_still_dropped(tmp_path: Path) -> None:
    # No newline: the write stopped before it, whatever the bytes before it parse as.
    path = tmp_path / "mirror.jsonl"
    path.write_text(HEADER + entry_line(0) + "\n" + entry_line(1))
    assert [e.leafIndex for e in Mirror(path, IDENTITY).entries] == [0]
    assert path.read_text() == HEADER + entry_line(0) + "\n"


@pytest.mark.parametrize("content", ["", HEADER.removesuffix("\n"), HEADER[:10]])
def test_a_mirror_without_a_whole_header_line_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "mirror.jsonl"
    path.write_text(content)
    with pytest.raises(ToolError, match="has no header line"):
        Mirror(path, IDENTITY)
    assert path.read_text() == content  # left as it was


def test_a_header_of_another_kind_of_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mirror.jsonl"
    path.write_text('{"something": "else"}\n')
    with pytest.raises(ToolError, match="is not a medtrail mirror"):
        Mirror(path, IDENTITY)


def test_a_mirror_of_another_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mirror.jsonl"
    path.write_text(HEADER)
    with pytest.raises(
        ToolError, match=r"the mirror .* belongs to the log of AuditLog .* on chain 31337"
    ):
        Mirror(path, LogIdentity(1, "0x" + "22" * 20))
    assert path.read_text() == HEADER  # left as it was


@pytest.mark.parametrize("broken", ["", "{}", "not json", entry_line(1)[:-1] + ',"x"'])
def test_a_broken_line_before_the_last_is_refused_with_its_number(
    tmp_path: Path, broken: str
) -> None:
    path = tmp_path / "mirror.jsonl"
    content = HEADER + entry_line(0) + "\n" + broken + "\n" + entry_line(2) + "\n"
    path.write_text(content)
    with pytest.raises(ToolError, match=r"line 3 of the mirror .* is malformed"):
        Mirror(path, IDENTITY)
    assert path.read_text() == content  # nothing cut
