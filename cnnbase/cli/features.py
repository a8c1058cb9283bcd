"""``cnnbase features list|export``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from . import app
from ._console import console
from ._options import StoreOpt

features_app = typer.Typer(help="What the feature store holds; export entries for use elsewhere.", no_args_is_help=True)
app.add_typer(features_app, name="features")


def _store(store):  # type: ignore[no-untyped-def]
    from ..config import default_store
    from ..features.store import FeatureStore

    return FeatureStore(store or default_store())


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@features_app.command("list")
def list_features(store: StoreOpt = None) -> None:
    """Show every entry: dataset, split, backbone, layer, shape, dtype, size, key and status."""
    from ..errors import StoreError

    st = _store(store)
    if not st.root.exists():
        if store is not None:
            raise StoreError(f"no feature store at {st.root}: the folder does not exist; check --store")
        console.print(f"the store {escape(str(st.root))} does not exist yet (extract creates it)", soft_wrap=True, highlight=False)
        return
    if not st.root.is_dir():
        raise StoreError(f"the store {st.root} is a file, not a folder; give a folder with --store")
    rows = st.manifests()
    if not rows:
        console.print(f"the store {escape(str(st.root))} is empty", soft_wrap=True, highlight=False)
        return
    t = Table(header_style="bold underline", title=escape(str(st.root)), box=None, pad_edge=False)  # no rules: room for cells
    for col in ("dataset", "split", "backbone", "layer", "shape", "dtype", "size"):
        t.add_column(col, overflow="fold")  # narrow terminals wrap a cell rather than cut it to "tiny_…"
    t.add_column("key", no_wrap=True, min_width=_KEY_CHARS)  # what `features export` needs, whole
    t.add_column("status", overflow="fold")
    for path, m in rows:
        f = m.get("fields", {})
        status = escape(str(m.get("status", "?")))
        if status == "partial":
            done = len(list((path / "shards").glob("*.npy")))
            status = f"[yellow]partial ({done} shards)[/]"
        elif m.get("skipped"):
            status = f"complete, {len(m['skipped'])} skipped"
        t.add_row(
            *(escape(str(v)) for v in (f.get("dataset"), f.get("split"), f.get("backbone"), f.get("layer"), tuple(m.get("shape", [])),
                                       m.get("dtype", f.get("dtype", "")))),
            _size(m.get("bytes", 0)), escape(str(m.get("key", ""))[:_KEY_CHARS]), status,
        )
    console.print(t)


_KEY_CHARS = 12  # key characters shown; `features export` takes 6 or more


@features_app.command("export")
def export(
    key: str = typer.Argument(..., help="Key prefix (at least 6 characters) from `cnnbase features list`."),
    out: Path = typer.Argument(
        ..., help="Output file: .npz (features + ids + valid mask) or .npy (features; ids in OUT.ids.txt); other names get .npy added."
    ),
    store: StoreOpt = None,
) -> None:
    """Write one entry's array and its ordered sample ids for use elsewhere.

    OUT ending in .npz gets one file; any other name gets OUT.npy (OUT itself when it ends in .npy, since numpy
    adds .npy to other names) and OUT.ids.txt. The names actually written are printed.
    """
    import numpy as np

    f = _store(store).find(key).load(mmap=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez(out, features=np.asarray(f.array), ids=np.asarray(f.ids), valid=f.valid)
        written = [out]
    else:
        arr = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # the name np.save writes
        ids = out.with_name(out.name + ".ids.txt")
        np.save(arr, np.asarray(f.array))
        ids.write_text("\n".join(f.ids) + "\n")
        written = [arr, ids]
    names = " and ".join(escape(str(w)) for w in written)
    console.print(f"wrote {names}: features {tuple(f.array.shape)}, {len(f.ids)} samples", soft_wrap=True, highlight=False)
