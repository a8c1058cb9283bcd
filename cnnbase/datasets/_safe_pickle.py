"""Load a ground-truth pickle without letting it run code.

``pickle.load`` executes whatever callable a file names (``os.system`` included), so a ``gnd_*.pkl`` downloaded from
anywhere must not go through it. :class:`RestrictedUnpickler` refuses every global except a short allow-list:

* nothing at all is needed by the official revisitop files: ``gnd_roxford5k.pkl`` and ``gnd_rparis6k.pkl``
  (protocol 3) hold only dicts, lists, strings, ints and floats, and pickletools shows no GLOBAL/STACK_GLOBAL or
  REDUCE opcode in them;
* re-saved copies sometimes hold numpy arrays (``np.array(gnd['easy'])``) or sets, so these are admitted, and
  nothing else:

  - ``builtins.set`` / ``frozenset`` / ``complex`` and ``collections.OrderedDict`` (plain containers/numbers);
  - ``numpy.core.multiarray._reconstruct`` and ``numpy._core.multiarray._reconstruct`` (numpy 1 / 2 names),
    ``numpy.ndarray`` and ``numpy.dtype``: what ``ndarray.__reduce__`` emits. ``_reconstruct`` builds an empty
    array of a class that itself had to pass this check, so it can only ever make an ``ndarray``;
  - ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar``: numpy scalars (``np.int64(3)``) from
    a dtype and raw bytes;
  - ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``: arrays pickled with protocol 5;
  - ``_codecs.encode``, only with the ``latin1`` codec: how protocol-2 pickles written by Python 3 spell
    ``bytes`` (the raw data of a numpy array).

Object arrays are safe too: their elements are unpickled by this same class. Anything else (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ``numpy.load``...) raises :class:`~cnnbase.errors.DatasetError` naming the
file and the refused global, before any of it runs.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import DatasetError

_ALLOWED: dict[tuple[str, str], Any] = {}


def _allowed() -> dict[tuple[str, str], Any]:
    if _ALLOWED:
        return _ALLOWED
    import collections

    import numpy as np

    table: dict[tuple[str, str], Any] = {
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        for mod, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"), (f"{core}.numeric", "_frombuffer")):
            obj = _numpy_attr(mod, name)
            if obj is not None:
                table[(mod, name)] = obj
    _ALLOWED.update(table)
    return _ALLOWED


def _numpy_attr(module: str, name: str) -> Any:
    import importlib
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy 2 warns when numpy.core is touched
            return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only as encode(str, 'latin1'), not with {encoding!r}")
    return obj.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals listed in the module docstring."""

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, *, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if module == "__builtin__":  # protocol 0-2 pickles spell builtins the Python 2 way
            module = "builtins"
        obj = _allowed().get((module, name))
        if obj is None:
            raise DatasetError(
                f"{self.source}: refused to load: the pickle asks for {module}.{name}, which a ground-truth file "
                "never needs (only containers, numbers and numpy arrays are admitted); do not use this file, "
                "download the official one again"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise DatasetError(f"{self.source}: refused to load: the pickle uses persistent ids; download the official file again")


def load_pickle(path: Path | str) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; every failure is a one-line DatasetError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; point --root at the folder holding it") from None
    return loads(data, source=str(path))


def loads(data: bytes, *, source: str = "<pickle>") -> Any:
    """Unpickle bytes with :class:`RestrictedUnpickler`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except DatasetError:
        raise
    except Exception as exc:  # a truncated or corrupt pickle raises many different types
        raise DatasetError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc}); download the file again") from None
