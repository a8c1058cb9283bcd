"""Feature store: content addressing, no-op reruns, new entries on changed settings, resume, corruption, jitter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cnnbase.errors import CnnbaseError, StoreError
from cnnbase.features.store import FeatureStore
from cnnbase.runner import Context, FeatureOptions, extract, load_features

OPTS = FeatureOptions(weights="random", workers=0, batch_size=4, shard_size=4, precision="fp32")


def _ctx(tmp_path: Path, name: str = "store") -> Context:
    return Context(store=FeatureStore(tmp_path / name), progress=False)


def test_rerun_same_key_is_noop(tmp_path: Path, random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    before = (e.path / "features.npy").stat().st_mtime_ns
    import cnnbase.runner as runner

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("no extraction should run")

    monkeypatch.setattr(runner, "run_extraction", boom)
    (e2,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    assert e2.path == e.path and (e.path / "features.npy").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "change",
    [
        {"preprocess": "square:32"},
        {"precision": "bf16"},
        {"jitter": "flip"},
        {"pool": "avg"},
        {"dtype": "float16"},
        {"seed": 1},
    ],
)
def test_changed_setting_makes_new_entry(tmp_path: Path, random_folder: Path, change: dict) -> None:
    from dataclasses import replace

    ctx = _ctx(tmp_path)
    (a,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    (b,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(OPTS, **change), ctx=ctx)
    assert a.key != b.key and a.path != b.path and a.complete and b.complete


def test_changed_image_list_makes_new_entry(tmp_path: Path, random_folder: Path) -> None:
    from PIL import Image

    ctx = _ctx(tmp_path)
    (a,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    Image.new("RGB", (20, 20), "red").save(random_folder / "a" / "new.jpg")
    from cnnbase.runner import _open_cached

    _open_cached.cache_clear()
    (b,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    assert a.key != b.key


def test_several_layers_one_pass_each_stored(tmp_path: Path, random_folder: Path) -> None:
    ctx = _ctx(tmp_path)
    entries = extract("tiny_cnn", str(random_folder), layers="fc6,fc7,conv2", splits=["all"], opts=OPTS, ctx=ctx)
    shapes = {e.fields["layer"]: e.load().array.shape for e in entries}
    assert shapes == {"fc6": (15, 32), "fc7": (15, 32), "conv2": (15, 16 * 8 * 8)}


def test_interrupted_run_resumes_and_matches(tmp_path: Path, random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbase.features import store as store_mod

    clean = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=_ctx(tmp_path, "clean"))[0]
    real = store_mod.StoreEntry.write_shard
    calls = {"n": 0}

    def flaky(self, i, array, skipped):  # type: ignore[no-untyped-def]
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        real(self, i, array, skipped)

    monkeypatch.setattr(store_mod.StoreEntry, "write_shard", flaky)
    ctx = _ctx(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    monkeypatch.setattr(store_mod.StoreEntry, "write_shard", real)
    entry = ctx.store.entry(clean.fields)
    assert not entry.complete and len(list((entry.path / "shards").glob("*.npy"))) == 2
    written = []
    monkeypatch.setattr(store_mod.StoreEntry, "write_shard", lambda self, i, a, s: (written.append(i), real(self, i, a, s)))
    extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    assert written == [2, 3]  # 15 samples / 4 per shard: shards 0 and 1 were kept
    assert (entry.path / "features.npy").read_bytes() == (clean.path / "features.npy").read_bytes()


def test_corrupted_shard_is_recomputed(tmp_path: Path, random_folder: Path) -> None:
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    (e.path / "shards").mkdir()
    e.write_shard(0, np.zeros((4, 32), np.float32), [])
    assert e.shard_ok(0, 4)
    p = e.shard_path(0)
    p.write_bytes(p.read_bytes()[:-7])  # truncated after its checksum was written
    assert not e.shard_ok(0, 4)


def test_truncated_features_file_is_an_error(tmp_path: Path, random_folder: Path) -> None:
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    f = e.path / "features.npy"
    f.write_bytes(f.read_bytes()[:-16])
    with pytest.raises(StoreError, match="truncated"):
        e.load()


def test_same_size_overwrite_of_features_fails_its_checksum(tmp_path: Path, random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checksum runs when the file changed since its last check (mtime), so untouched loads cost no hashing."""
    from cnnbase.features import store as store_mod

    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    hashed = []
    real = store_mod.file_sha256
    monkeypatch.setattr(store_mod, "file_sha256", lambda p: hashed.append(p) or real(p))
    e.load()
    assert hashed == []  # untouched since extraction
    f = e.path / "features.npy"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # copied without -p: same bytes, new mtime
    e.load()
    e.load()
    assert len(hashed) == 1  # checked once, and the new mtime recorded
    data = bytearray(f.read_bytes())
    data[-64:] = bytes(64)  # 64 bytes overwritten in place: same size
    f.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="fails its checksum"):
        e.load()


def test_edited_manifest_is_never_silently_reused(tmp_path: Path, random_folder: Path) -> None:
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    m = json.loads(e.manifest_path.read_text())
    m["fields"]["precision"] = "bf16"
    e.manifest_path.write_text(json.dumps(m))
    with pytest.raises(StoreError, match="does not match its key"):
        extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)


def test_razavian_jitter_stores_16_views(tmp_path: Path, random_folder: Path) -> None:
    from dataclasses import replace

    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(OPTS, jitter="razavian"), ctx=ctx)
    f = e.load()
    assert f.array.shape == (15, 16, 32) and f.views == 16
    assert e.manifest()["fields"]["jitter"]["rotations"] == [-10.0, 10.0]


def test_bad_images_fail_lists_all_or_skip_records(tmp_path: Path, random_folder: Path) -> None:
    from dataclasses import replace

    (random_folder / "a" / "broken.jpg").write_bytes(b"<html>not found</html>")
    (random_folder / "c" / "empty.jpg").write_bytes(b"")
    ctx = _ctx(tmp_path)
    with pytest.raises(CnnbaseError) as exc:
        extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    assert "2 bad image(s)" in str(exc.value) and "broken.jpg" in str(exc.value) and "empty.jpg" in str(exc.value)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(OPTS, on_bad_image="skip"), ctx=ctx)
    f = e.load()
    skipped = {s["id"] for s in e.manifest()["skipped"]}
    assert skipped == {"a/broken.jpg", "c/empty.jpg"}
    assert (~f.valid).sum() == 2 and np.isnan(np.asarray(f.array)[~f.valid]).all()
    assert np.isfinite(np.asarray(f.array)[f.valid]).all()


def test_load_features_without_extract_is_clear(tmp_path: Path, random_folder: Path) -> None:
    with pytest.raises(StoreError, match="run `cnnbase extract` first"):
        load_features("tiny_cnn", str(random_folder), split="all", opts=OPTS, ctx=_ctx(tmp_path), extract_missing=False)


def test_find_by_key_prefix(tmp_path: Path, random_folder: Path) -> None:
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    assert ctx.store.find(e.key[:8]).path == e.path
    with pytest.raises(StoreError):
        ctx.store.find("zzzzzzzz")


def test_fail_mode_does_not_reuse_features_stored_with_skip(tmp_path: Path, random_folder: Path) -> None:
    from dataclasses import replace

    (random_folder / "b" / "bad.jpg").write_bytes(b"")
    ctx = _ctx(tmp_path)
    extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(OPTS, on_bad_image="skip"), ctx=ctx)
    with pytest.raises(CnnbaseError, match="1 bad image.*earlier --on-bad-image skip run.*bad.jpg: empty file"):
        extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
