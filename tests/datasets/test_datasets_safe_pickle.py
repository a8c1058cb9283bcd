"""The restricted unpickler: plain containers, numbers and numpy arrays load; anything that could run code is refused."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnnbase.datasets._safe_pickle import load_pickle, loads
from cnnbase.datasets.revisited import read_revisited
from cnnbase.errors import DatasetError


class _Evil:
    """Pickles to a call of ``fn(*args)``: what a malicious gnd file would contain."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return self.fn, self.args


def _marker_cmd(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_os_system_is_refused_before_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps({"imlist": [], "gnd": _Evil(os.system, _marker_cmd(marker))}, protocol=protocol)
    with pytest.raises(DatasetError, match=r"refused to load: the pickle asks for (posix|os|nt)\.system"):
        loads(data, source="evil.pkl")
    assert not marker.exists()


def test_handwritten_global_reduce(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = b"cos\nsystem\n(S'" + _marker_cmd(marker).encode() + b"'\ntR."
    with pytest.raises(DatasetError, match=r"evil\.pkl: refused to load: the pickle asks for os\.system"):
        loads(data, source="evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(
    "fn, args, name",
    [
        (eval, ("1+1",), "builtins.eval"),
        (exec, ("x=1",), "builtins.exec"),
        (getattr, ("abc", "upper"), "builtins.getattr"),
        (subprocess.Popen, (["true"],), "subprocess.Popen"),
        (np.load, ("x.npy",), "numpy.load"),
    ],
)
def test_other_dangerous_globals(fn: object, args: tuple, name: str) -> None:
    with pytest.raises(DatasetError, match=rf"asks for {name}"):
        loads(pickle.dumps(_Evil(fn, *args), protocol=4))


def test_numpy_reconstruct_cannot_be_given_another_class() -> None:
    # _reconstruct is admitted, but its subtype argument must itself pass find_class
    import numpy.core.multiarray as ma  # noqa: F401  (the pickle below names numpy.core)

    data = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\n"
        b"cos\nsystem\n"
        b"K\x00\x85C\x01b\x87R."
    )
    with pytest.raises(DatasetError, match="asks for os.system"):
        loads(data)


def test_codecs_encode_only_latin1() -> None:
    import _codecs

    assert loads(pickle.dumps(_Evil(_codecs.encode, "abc", "latin1"), protocol=2)) == b"abc"
    with pytest.raises(DatasetError, match="not a readable pickle"):
        loads(pickle.dumps(_Evil(_codecs.encode, "abc", "rot13"), protocol=2))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_and_numpy_arrays_load(protocol: int) -> None:
    obj = {
        "imlist": ["a", "b"],
        "gnd": [{"bbx": [1, 2.5, 3, 4], "easy": np.array([0, 1], dtype=np.int64), "hard": np.arange(3.0), "junk": {2}}],
        "n": np.int64(7),
        "t": (1, 2 + 3j, None, True, b"raw"),
        "o": np.array([1, "x"], dtype=object),
    }
    out = loads(pickle.dumps(obj, protocol=protocol))
    assert out["imlist"] == ["a", "b"] and out["gnd"][0]["bbx"] == [1, 2.5, 3, 4]
    np.testing.assert_array_equal(out["gnd"][0]["easy"], [0, 1])
    assert out["gnd"][0]["hard"].dtype == np.float64 and out["gnd"][0]["junk"] == {2}
    assert out["n"] == 7 and out["t"] == (1, 2 + 3j, None, True, b"raw") and out["o"].tolist() == [1, "x"]


def test_truncated_and_missing(tmp_path: Path) -> None:
    data = pickle.dumps({"imlist": ["a"] * 10}, protocol=3)
    with pytest.raises(DatasetError, match="not a readable pickle"):
        loads(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="file not found"):
        load_pickle(tmp_path / "nope.pkl")


def test_revisited_reader_refuses_a_malicious_gnd(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = {"imlist": ["a"], "qimlist": ["q"], "gnd": [_Evil(os.system, _marker_cmd(marker))]}
    (tmp_path / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(evil, protocol=3))
    with pytest.raises(DatasetError, match=r"gnd_roxford5k\.pkl: refused to load"):
        read_revisited(tmp_path, name="roxford5k")
    assert not marker.exists()
