"""LinearSVMHead(checkpoint_dir=...): a fit interrupted at any unit of work and rerun resumes from the finished units
and gives bitwise the model of an uninterrupted fit; checkpoints of other data, other options or corrupted files
are never used."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnbase.heads import svm
from cnnbase.heads.svm import LinearSVMHead

C_GRID = (0.01, 0.1, 1.0, 10.0)
RESULT_ATTRS = (
    "coef_",
    "intercept_",
    "C_",
    "cv_scores_",
    "cv_fold_scores_",
    "n_iter_",
    "converged_",
    "objective_",
    "fold_ids_",
)

# (head options, feature dimension, module constants to patch so that a path has several units)
CASES = {
    "ovr-torch-primal": ({"mode": "ovr", "solver": "torch"}, 64, {}),  # n > 2 d: w-space solver
    "ovr-torch-kernel": ({"mode": "ovr", "solver": "torch"}, 160, {}),  # n <= 2 d: Gram-matrix solver
    "ovo-torch-global": ({"mode": "ovo", "solver": "torch"}, 64, {"_CHUNK_BYTES": 4 * 116_800}),
    "ovo-torch-problem": (
        {"mode": "ovo", "solver": "torch", "cv_scope": "problem"},
        64,
        {"_CHUNK_BYTES": 4 * 116_800},
    ),
    "ovr-liblinear": ({"mode": "ovr", "solver": "liblinear"}, 64, {}),
    "ovo-liblinear-global": ({"mode": "ovo", "solver": "liblinear"}, 64, {"_LIBLINEAR_PAIRS": 4}),
    "ovo-liblinear-problem": (
        {"mode": "ovo", "solver": "liblinear", "cv_scope": "problem"},
        64,
        {"_LIBLINEAR_PAIRS": 4},
    ),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny problems, one thread


def make_data(d: int, *, n: int = 300, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((k, 16))
    proj = rng.standard_normal((16, d)) / 4
    y = np.arange(n) % k
    rng.shuffle(y)
    h = np.maximum(
        (1.2 * protos[y] + rng.standard_normal((n, 16))) @ proj + 0.3 * rng.standard_normal((n, d)), 0
    )
    return (h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)).astype(np.float32), y


class Recorder:
    """Counts solver calls and checkpoint saves; raises KeyboardInterrupt after ``stop_after`` saves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.saved: list[str] = []
        self.stop_after: int | None = None

        def counted(f):  # type: ignore[no-untyped-def]
            def wrapper(*a, **k):  # type: ignore[no-untyped-def]
                self.calls += 1
                return f(*a, **k)

            return wrapper

        monkeypatch.setattr(svm, "_newton_kernel", counted(svm._newton_kernel))
        monkeypatch.setattr(svm, "_newton_primal", counted(svm._newton_primal))
        monkeypatch.setattr(LinearSVMHead, "_liblinear_one", counted(LinearSVMHead._liblinear_one))
        monkeypatch.setattr(svm, "_after_checkpoint_save", self._saved)

    def _saved(self, name: str) -> None:
        self.saved.append(name)
        if self.stop_after is not None and len(self.saved) >= self.stop_after:
            raise KeyboardInterrupt

    def run(self, head: LinearSVMHead, X: np.ndarray, y: np.ndarray, stop_after: int | None = None):  # type: ignore[no-untyped-def]
        """Fit; returns (fitted head or None if interrupted, solver calls, unit names saved)."""
        self.calls, self.saved, self.stop_after = 0, [], stop_after
        try:
            head.fit(X, y)
        except KeyboardInterrupt:
            return None, self.calls, list(self.saved)
        return head, self.calls, list(self.saved)


def assert_bitwise_equal(a: LinearSVMHead, b: LinearSVMHead) -> None:
    for name in RESULT_ATTRS:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"


def unit_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("unit-*.npz")) if folder.is_dir() else []


def reference(rec: Recorder, opts: dict, X: np.ndarray, y: np.ndarray, folder: Path):  # type: ignore[no-untyped-def]
    """The clean fit (no checkpoints), its solver calls, and the units an uninterrupted checkpointed fit saves."""
    clean, calls, saved = rec.run(LinearSVMHead(C=C_GRID, **opts), X, y)
    assert clean is not None and saved == []
    ckpt, calls_ckpt, units = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=folder, **opts), X, y)
    assert calls_ckpt == calls and not folder.exists()
    assert_bitwise_equal(ckpt, clean)
    return clean, calls, units


def setup_case(case: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    opts, d, consts = CASES[case]
    for name, value in consts.items():
        monkeypatch.setattr(svm, name, value)
    X, y = make_data(d)
    return opts, X, y


# ------------------------------------------------------------------------------------ interrupt and resume


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_after_each_unit_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
):
    """Interrupt after 1, 2, ... units, each time rerunning: no unit is computed twice, the result is bitwise
    the clean fit's, and the checkpoint folder is gone afterwards."""
    opts, X, y = setup_case(case, monkeypatch)
    rec = Recorder(monkeypatch)
    clean, clean_calls, clean_units = reference(rec, opts, X, y, tmp_path / "ref")
    assert len(clean_units) >= 4, clean_units  # several units to interrupt between

    ck = tmp_path / "ckpt"
    # one interrupted run after the first unit, then runs that each compute exactly one more unit
    done: list[str] = []
    total_calls = 0
    for attempt in range(len(clean_units) + 2):
        head, calls, saved = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts), X, y, stop_after=1)
        total_calls += calls
        assert not set(saved) & set(done), f"recomputed {set(saved) & set(done)}"
        done += saved
        if head is not None:
            break
        assert len(saved) == 1 and unit_files(ck), attempt
    assert head is not None
    assert sorted(done) == sorted(clean_units)
    assert total_calls == clean_calls  # every solver call of the clean fit, once
    assert_bitwise_equal(head, clean)
    assert not ck.exists()  # removed on success


@pytest.mark.parametrize("case", list(CASES))
def test_interrupt_midway_then_one_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str):
    opts, X, y = setup_case(case, monkeypatch)
    rec = Recorder(monkeypatch)
    clean, clean_calls, clean_units = reference(rec, opts, X, y, tmp_path / "ref")
    k = len(clean_units) // 2
    ck = tmp_path / "ckpt"
    head, calls1, saved1 = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts), X, y, stop_after=k)
    assert head is None and saved1 == clean_units[:k]
    head, calls2, saved2 = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts), X, y)
    assert saved2 == clean_units[k:]  # the rest, in order, nothing twice
    assert calls1 + calls2 == clean_calls
    assert_bitwise_equal(head, clean)
    assert not ck.exists()


def test_no_checkpoint_dir_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    X, y = make_data(64)
    rec = Recorder(monkeypatch)
    head, _, saved = rec.run(LinearSVMHead(C=C_GRID, solver="torch"), X, y)
    assert head is not None and saved == []


# ------------------------------------------------------------------------------------ stale / corrupted


@pytest.mark.parametrize("case", ["ovr-torch-kernel", "ovo-torch-global", "ovr-liblinear"])
@pytest.mark.parametrize("change", ["features", "labels", "params"])
def test_checkpoint_of_other_data_or_params_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, change: str
):
    opts, X, y = setup_case(case, monkeypatch)
    rec = Recorder(monkeypatch)
    ck = tmp_path / "ckpt"
    head, _, saved = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts), X, y, stop_after=3)
    assert head is None and len(unit_files(ck)) == 3

    X2, y2, opts2 = X.copy(), y.copy(), dict(opts)
    if change == "features":
        X2[150, 3] += 1e-3  # one value of one row
    elif change == "labels":
        y2[10] = (y2[10] + 1) % 6  # one label
    else:
        opts2["class_weight"] = {1: 2.0, -1: 1.0}
    clean, clean_calls, clean_units = reference(rec, opts2, X2, y2, tmp_path / "ref")
    with pytest.warns(UserWarning, match="made for other data or options"):
        head, calls, saved = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts2), X2, y2)
    assert calls == clean_calls and saved == clean_units  # everything recomputed
    assert_bitwise_equal(head, clean)
    assert not ck.exists()


def _rewrite_npz(path: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    mutate(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _flip_value(arrays: dict[str, np.ndarray]) -> None:
    name = next(k for k in arrays if k != "__meta__" and arrays[k].size)
    a = arrays[name].copy()
    a.reshape(-1).view(np.uint8)[0] ^= 1
    arrays[name] = a


def _other_key(arrays: dict[str, np.ndarray]) -> None:
    meta = json.loads(str(arrays["__meta__"]))
    meta["key"] = "0" * 64
    arrays["__meta__"] = np.array(json.dumps(meta))


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(b"not an npz file"),
    "flipped-bit": lambda p: _rewrite_npz(p, _flip_value),  # valid zip, checksum in the header fails
    "other-key": lambda p: _rewrite_npz(p, _other_key),
}


@pytest.mark.parametrize("case", ["ovr-torch-primal", "ovo-torch-global", "ovo-liblinear-global"])
@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_corrupted_checkpoint_is_ignored_and_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, how: str
):
    opts, X, y = setup_case(case, monkeypatch)
    rec = Recorder(monkeypatch)
    clean, clean_calls, clean_units = reference(rec, opts, X, y, tmp_path / "ref")
    ck = tmp_path / "ckpt"
    head, calls1, saved1 = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts), X, y, stop_after=3)
    bad = sorted(ck.glob(f"unit-{saved1[1]}.npz"))
    assert head is None and len(bad) == 1
    CORRUPTIONS[how](bad[0])
    with pytest.warns(UserWarning, match="checkpoint file"):
        head, calls2, saved2 = rec.run(LinearSVMHead(C=C_GRID, checkpoint_dir=ck, **opts), X, y)
    assert saved2 == [saved1[1]] + clean_units[3:]  # the bad unit again, then the rest
    # only the bad unit is computed twice: one solver call (torch), one LinearSVC per pair of the batch (liblinear)
    unit_calls = {"ovo-liblinear-global": 4}.get(case, 1)
    assert calls1 + calls2 == clean_calls + unit_calls
    assert_bitwise_equal(head, clean)
    assert not ck.exists()


def test_stray_files_in_checkpoint_dir_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    X, y = make_data(64)
    ck = tmp_path / "ckpt"
    ck.mkdir()
    (ck / "notes.txt").write_text("mine")
    LinearSVMHead(C=C_GRID, solver="torch", checkpoint_dir=ck).fit(X, y)
    assert [p.name for p in ck.iterdir()] == ["notes.txt"]


def test_checkpoint_dir_is_a_parameter_but_not_saved(tmp_path: Path):
    X, y = make_data(64)
    head = LinearSVMHead(C=C_GRID, solver="torch", checkpoint_dir=tmp_path / "ck").fit(X, y)
    assert head.get_params()["checkpoint_dir"] == tmp_path / "ck"
    head.save(tmp_path / "head.npz")
    back = LinearSVMHead.load(tmp_path / "head.npz")
    assert back.checkpoint_dir is None
    assert np.array_equal(back.coef_, head.coef_)


# ------------------------------------------------------------------------------------ a real SIGKILL

CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from cnnbase.heads import svm
folder = Path(sys.argv[1])
X, y = np.load(folder / "X.npy"), np.load(folder / "y.npy")
saves = []
def hook(name):
    saves.append(name)
    if len(saves) == 2:
        (folder / "ready").write_text(name)
        time.sleep(300)
svm._after_checkpoint_save = hook
svm.LinearSVMHead(C=__GRID__, mode="ovr", solver="torch", checkpoint_dir=folder / "ckpt").fit(X, y)
(folder / "finished").write_text("")
""".replace("__GRID__", repr(C_GRID))


def test_sigkill_mid_fit_then_rerun_resumes_bitwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    X, y = make_data(160)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], env=env, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None, f"child ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() - t0 < 180, "child never reached its second checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    ck = tmp_path / "ckpt"
    assert len(unit_files(ck)) == 2 and not (tmp_path / "finished").exists()

    rec = Recorder(monkeypatch)
    clean, clean_calls, clean_units = reference(
        rec, {"mode": "ovr", "solver": "torch"}, X, y, tmp_path / "ref"
    )
    head, calls, saved = rec.run(LinearSVMHead(C=C_GRID, mode="ovr", solver="torch", checkpoint_dir=ck), X, y)
    assert saved == clean_units[2:] and calls == clean_calls - 2
    assert_bitwise_equal(head, clean)
    assert not ck.exists()


# ------------------------------------------------------------------------------------ through the runner


def test_runner_train_svm_resumes_from_its_checkpoint(
    tmp_path: Path, texture_set: Path, monkeypatch: pytest.MonkeyPatch
):
    from cnnbase.features.store import FeatureStore
    from cnnbase.runner import Context, FeatureOptions, train_svm

    opts = FeatureOptions(weights="random", workers=0, batch_size=16)

    rec = Recorder(monkeypatch)
    rec.calls, rec.saved, rec.stop_after = 0, [], 2
    c = Context(store=FeatureStore(tmp_path / "store"), progress=False, results=tmp_path / "records.jsonl")
    with pytest.raises(KeyboardInterrupt):
        train_svm("tiny_cnn", str(texture_set), opts=opts, ctx=c)
    folders = list((tmp_path / "store").rglob("svm-*.ckpt"))
    assert len(folders) == 1 and len(unit_files(folders[0])) == 2
    assert not list(folders[0].parent.glob("svm-*.npz"))  # no head saved yet
    first = list(rec.saved)

    rec.calls, rec.saved, rec.stop_after = 0, [], None
    th = train_svm("tiny_cnn", str(texture_set), opts=opts, ctx=c)
    resumed_calls, resumed = rec.calls, list(rec.saved)
    assert not th.reused and not set(resumed) & set(first)
    assert th.path.parent == folders[0].parent and th.path.name == folders[0].name.replace(".ckpt", ".npz")
    assert not folders[0].exists()

    # the clean reference: the same features, the saved head removed, trained again from scratch
    th.path.unlink()
    rec.calls, rec.saved = 0, []
    clean = train_svm("tiny_cnn", str(texture_set), opts=opts, ctx=c)
    assert not clean.reused and rec.saved == first + resumed
    assert resumed_calls == rec.calls - len(first)
    assert_bitwise_equal(th.head, clean.head)
