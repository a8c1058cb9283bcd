"""``records.jsonl`` under concurrency and crashes: concurrent appenders (processes and threads) keep every line
whole; a line left partial by a crash is reported by number, and never swallows the records appended after it;
a full disk while appending is one clear error."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest
from _robust_child import append_records, context

from cnnbase.errors import CnnbaseError
from cnnbase.results.records import append_record, read_records

SIZES = [1, 300, 5_000, 70_000]  # from tiny lines to lines far larger than a pipe or page buffer


def _check_all_whole(path: Path, tags: dict[str, int]) -> None:
    recs = read_records(path)
    assert len(recs) == sum(tags.values())
    for tag, n in tags.items():
        mine = [r for r in recs if r["tag"] == tag]
        assert sorted(r["i"] for r in mine) == list(range(n))
        assert all(r["pad"] == tag * SIZES[r["i"] % len(SIZES)] for r in mine)
    assert path.read_bytes().endswith(b"\n") and path.read_bytes().count(b"\n") == len(recs)


@pytest.mark.timeout(300)
def test_two_processes_appending_keep_every_line_whole(tmp_path: Path) -> None:
    path, n = tmp_path / "results" / "records.jsonl", 60
    ctx = context()
    procs = [ctx.Process(target=append_records, args=(str(path), tag, n, SIZES)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _check_all_whole(path, {"a": n, "b": n})


def test_threads_appending_keep_every_line_whole(tmp_path: Path) -> None:
    path, n = tmp_path / "records.jsonl", 40
    threads = [threading.Thread(target=append_records, args=(str(path), tag, n, SIZES)) for tag in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_all_whole(path, {t: n for t in "xyz"})


def _two_good(path: Path) -> None:
    append_record({"run_id": "r1", "value": 0.5}, path)
    append_record({"run_id": "r2", "value": 0.25}, path)


def test_truncated_last_line_is_reported_by_number(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    _two_good(path)
    with open(path, "ab") as f:
        f.write(b'{"run_id": "r3", "value": 0.1, "per_cl')  # the crash: no closing brace, no newline
    with pytest.raises(CnnbaseError) as ei:
        read_records(path)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:3: not a JSON record") and "remove or repair that line" in msg and "\n" not in msg


def test_append_after_a_crash_does_not_glue_onto_the_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    _two_good(path)
    with open(path, "ab") as f:
        f.write(b'{"run_id": "r3", "val')
    append_record({"run_id": "r4", "value": 0.75}, path)
    with pytest.raises(CnnbaseError, match=r"records\.jsonl:3: "):
        read_records(path)
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[3]) == {"run_id": "r4", "value": 0.75}  # the new record is whole, on its own line
    path.write_bytes(b"\n".join(lines[:2] + lines[3:]))  # the user removes the damaged line
    assert [r["run_id"] for r in read_records(path)] == ["r1", "r2", "r4"]


@pytest.mark.parametrize(
    "bad", [b"\xff\xfe garbage bytes", b"42", b'["a", "list"]', b"null", b"{'single': 'quotes'}"], ids=repr
)
def test_line_that_is_not_a_record_is_reported(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "records.jsonl"
    _two_good(path)
    with open(path, "ab") as f:
        f.write(bad + b"\n")
    append_record({"run_id": "r4"}, path)
    with pytest.raises(CnnbaseError, match=r"records\.jsonl:3: not a JSON record"):
        read_records(path)


def test_disk_full_while_appending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "records.jsonl"
    _two_good(path)
    real_write, calls = os.write, []

    def full(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        if os.path.realpath(f"/proc/self/fd/{fd}") != str(path.resolve()):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write: half the line made it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(CnnbaseError) as ei:
        append_record({"run_id": "r3", "pad": "x" * 1000}, path)
    monkeypatch.undo()
    assert "disk full" in str(ei.value) and str(path) in str(ei.value) and "\n" not in str(ei.value)
    assert len(calls) == 2
    append_record({"run_id": "r4"}, path)  # space freed
    with pytest.raises(CnnbaseError, match=r"records\.jsonl:3: "):
        read_records(path)  # the half line is named; r4 is intact after it
    assert json.loads(path.read_bytes().split(b"\n")[3]) == {"run_id": "r4"}
