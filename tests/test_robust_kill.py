"""Fault injection with real processes: kill an extraction (SIGKILL, SIGTERM, SIGINT) between shards and in the
middle of a shard write, rerun it, and check that finished shards are not recomputed and the final features are
bitwise identical to an uninterrupted run; two processes extracting the same key at once, with a reader watching.

Each run is ``python -m cnnbase extract tiny_cnn FOLDER --weights random --store S --workers 0 --no-progress`` in
its own process (see ``_robust_child.py``: forked from a server that has torch imported, so a run costs ~1 s),
with 12 images in shards of 3 (4 shards; batches of 2, so every shard has a short last batch).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from _images import write_images
from _robust_child import Child, wait_for

from cnnbase.errors import StoreError
from cnnbase.features.store import StoreEntry

SHARD, N = 3, 12
N_SHARDS = N // SHARD
HOOKS = {"shard_size": SHARD}

pytestmark = pytest.mark.timeout(300)


def argv(folder: Path, store: Path) -> list[str]:
    return [
        "extract", "tiny_cnn", str(folder), "--weights", "random", "--store", str(store), "--workers", "0",
        "--no-progress", "--split", "all", "--precision", "fp32", "--batch-size", "2",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "imgs"
    write_images(root, {"a": 4, "b": 4, "c": 4}, size=32)
    return root


@pytest.fixture(scope="module")
def reference(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """features.npy of an uninterrupted run (same shard and batch sizes)."""
    work = tmp_path_factory.mktemp("reference")
    log = work / "shards.log"
    c = Child(argv(folder, work / "store"), work, "ref", {**HOOKS, "log": str(log)})
    assert c.wait() == 0, c.stderr
    assert _written(log) == list(range(N_SHARDS))
    return _entry_dir(work / "store").joinpath("features.npy").read_bytes()


def _written(log: Path) -> list[int]:
    """Shard indices whose write started, in order (the child logs each one)."""
    return [int(line.split()[1]) for line in log.read_text().splitlines()] if log.exists() else []


def _entry_dir(store: Path) -> Path:
    (d,) = [m.parent for m in store.glob("*/*/*/manifest.json")]
    return d


def _entry(store: Path) -> StoreEntry:
    d = _entry_dir(store)
    m = json.loads((d / "manifest.json").read_text())
    return StoreEntry(d, m["key"], m["fields"])


def _tmp_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.name.endswith(".tmp")]


SCENARIOS = [
    (signal.SIGKILL, "between"),
    (signal.SIGKILL, "in-write"),
    (signal.SIGTERM, "between"),
    (signal.SIGTERM, "in-write"),
    (signal.SIGINT, "between"),
    (signal.SIGINT, "in-write"),
]


@pytest.mark.parametrize(("sig", "where"), SCENARIOS, ids=[f"{s.name}-{w}" for s, w in SCENARIOS])
def test_killed_extraction_resumes_bitwise_identical(
    sig: signal.Signals, where: str, folder: Path, reference: bytes, tmp_path: Path
) -> None:
    store, ready = tmp_path / "store", tmp_path / "ready"
    # "between": paused after shards 0 and 1 were written; "in-write": shard 2's temporary file is written and
    # fsynced, the rename into place has not happened yet
    pause = {"pause_after": 2} if where == "between" else {"pause_in_write": 2}
    c = Child(argv(folder, store), tmp_path, "killed", {**HOOKS, **pause, "ready": str(ready)})
    wait_for(ready, c)
    entry = _entry(store)
    if where == "in-write":
        assert [p.name for p in _tmp_files(store)] == [f".00002.npy.{c.pid}.tmp"]
    c.signal(sig)
    rc = c.wait()

    # what the kill left behind
    if sig in (signal.SIGINT, signal.SIGTERM):  # the CLI turns SIGTERM into the same clean interrupt as Ctrl-C
        assert rc == 130
        lines = [ln for ln in c.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in c.stderr, c.stderr
        assert _tmp_files(store) == []  # the interrupted write removed its temporary file
    else:
        assert rc == -sig
        assert len(_tmp_files(store)) == (1 if where == "in-write" else 0)  # a hard kill can leave one behind
    assert entry.manifest()["status"] == "partial" and not (entry.path / "features.npy").exists()
    assert [i for i in range(N_SHARDS) if entry.shard_ok(i, SHARD)] == [0, 1]
    assert not entry.shard_path(2).exists()  # never a half-written shard under its real name
    with pytest.raises(StoreError, match="extraction not finished"):
        entry.load()

    # rerun to completion
    log = tmp_path / "resume.log"
    r = Child(argv(folder, store), tmp_path, "resume", {**HOOKS, "log": str(log)})
    assert r.wait() == 0, r.stderr
    assert _written(log) == [2, 3]  # finished shards were not recomputed
    assert (entry.path / "features.npy").read_bytes() == reference  # bitwise identical to an uninterrupted run
    assert entry.complete and entry.load(verify=True).array.shape == (N, 32)
    assert _tmp_files(store) == [] and not (entry.path / "shards").exists()


def test_second_writer_waits_then_reuses(folder: Path, reference: bytes, tmp_path: Path) -> None:
    """Two processes extract the same key at once while a reader polls the entry: the second waits on the lock
    and reuses the first one's result; the reader never sees a half-written shard, manifest or features file."""
    store = tmp_path / "store"
    ready, log_a, log_b = tmp_path / "ready", tmp_path / "a.log", tmp_path / "b.log"
    a = Child(argv(folder, store), tmp_path, "a",
              {**HOOKS, "log": str(log_a), "pause_after": 1, "pause": 1.0, "ready": str(ready), "sleep_per_shard": 0.3})  # fmt: skip
    wait_for(ready, a)
    b = Child(argv(folder, store), tmp_path, "b", {**HOOKS, "log": str(log_b)})
    seen = _Reader(store)
    seen.start()
    try:
        assert a.wait() == 0, a.stderr
        assert b.wait() == 0, b.stderr
    finally:
        seen.stop()
    assert seen.errors == []
    assert seen.shards_read >= 1 and seen.partial_seen  # it did watch the write happen
    assert "waiting" in b.stderr  # b found a's lock
    assert _written(log_a) == list(range(N_SHARDS)) and _written(log_b) == []  # b recomputed nothing
    assert (_entry_dir(store) / "features.npy").read_bytes() == reference


def test_waiting_writer_takes_over_from_a_killed_one(folder: Path, reference: bytes, tmp_path: Path) -> None:
    """The lock holder is SIGKILLed while a second process waits: the kernel drops the lock, the waiter resumes
    from the finished shards and produces the same bytes."""
    store, ready, log_b = tmp_path / "store", tmp_path / "ready", tmp_path / "b.log"
    a = Child(argv(folder, store), tmp_path, "a", {**HOOKS, "pause_after": 2, "ready": str(ready)})
    wait_for(ready, a)
    b = Child(argv(folder, store), tmp_path, "b", {**HOOKS, "log": str(log_b)})
    t0 = time.monotonic()
    while "waiting" not in b.stderr:
        assert b.proc.is_alive() and time.monotonic() - t0 < 120, b.stderr
        time.sleep(0.05)
    a.signal(signal.SIGKILL)
    assert a.wait() == -signal.SIGKILL
    assert b.wait() == 0, b.stderr
    assert _written(log_b) == [2, 3]
    assert (_entry_dir(store) / "features.npy").read_bytes() == reference


class _Reader(threading.Thread):
    """Polls an entry while it is written; records anything a reader could see half-done."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.store, self.errors, self.shards_read, self.partial_seen = store, [], 0, False
        self._stop_evt = threading.Event()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(30)

    def run(self) -> None:
        while not self._stop_evt.is_set():
            try:
                self._look()
            except Exception as exc:  # noqa: BLE001 (every surprise is a finding)
                self.errors.append(repr(exc))
            time.sleep(0.01)

    def _look(self) -> None:
        for mp in self.store.glob("*/*/*/manifest.json"):
            m = json.loads(mp.read_text())  # a torn manifest would not parse
            e = StoreEntry(mp.parent, m["key"], m["fields"])
            if m["status"] == "partial":
                self.partial_seen = True
                f = mp.parent / "features.npy"  # finalize renames it into place just before marking complete
                if f.exists():
                    assert np.load(f, allow_pickle=False).shape == (N, 32)
            else:
                f = e.load(verify=True)  # complete → whole and checksummed
                assert f.array.shape == (N, 32)
            for p in sorted((mp.parent / "shards").glob("*.npy")):
                try:
                    data = p.read_bytes()
                except FileNotFoundError:
                    continue  # removed by finalize
                assert np.load(BytesIO(data), allow_pickle=False).shape == (SHARD, 32), p
                self.shards_read += 1


def test_sigterm_to_the_process_group_with_decode_workers_is_one_line(tmp_path: Path) -> None:
    """A scheduler's kill reaches the decode workers too: they leave it to the main process, which stops in order (a
    worker dying of it made torch print a worker-death traceback over the resume hint: in 1 of 3 runs here, as it
    races with the main process's own stop)."""
    import os
    import subprocess
    import sys
    import time

    folder = tmp_path / "many"
    write_images(folder, {"a": 300, "b": 300}, size=64)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "cnnbase", "extract", "alexnet", str(folder), "--weights", "random", "--store", str(store),
           "--workers", "1", "--no-progress", "--split", "all", "--precision", "fp32", "--batch-size", "8"]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(store.glob("*/*/*/manifest.json")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # the decode worker is running
    assert p.poll() is None, "finished before the signal: give it more images"
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), err
