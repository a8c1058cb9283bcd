"""``cnnbase features list|export``."""

from __future__ import annotations

from pathlib import Path

import typer
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
    st = _store(store)
    rows = st.manifests()
    if not rows:
        console.print(f"the store {st.root} is empty")
        return
    t = Table("dataset", "split", "backbone", "layer", "shape", "dtype", "size", "key", "status", header_style="bold", title=str(st.root))
    for path, m in rows:
        f = m.get("fields", {})
        status = m.get("status", "?")
        if status == "partial":
            done = len(list((path / "shards").glob("*.npy")))
            status = f"[yellow]partial ({done} shards)[/]"
        elif m.get("skipped"):
            status = f"complete, {len(m['skipped'])} skipped"
        t.add_row(
            str(f.get("dataset")), str(f.get("split")), str(f.get("backbone")), str(f.get("layer")),
            str(tuple(m.get("shape", []))), str(m.get("dtype", f.get("dtype", ""))), _size(m.get("bytes", 0)),
            str(m.get("key", ""))[:12], status,
        )
    console.print(t)


@features_app.command("export")
def export(
    key: str = typer.Argument(..., help="Key prefix (at least 6 characters) from `cnnbase features list`."),
    out: Path = typer.Argument(..., help="Output file: .npz (features + ids + valid mask) or .npy (features; ids in OUT.ids.txt)."),
    store: StoreOpt = None,
) -> None:
    """Write one entry's array and its ordered sample ids for use elsewhere."""
    import numpy as np

    f = _store(store).find(key).load(mmap=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez(out, features=np.asarray(f.array), ids=np.asarray(f.ids), valid=f.valid)
    else:
        np.save(out, np.asarray(f.array))
        Path(str(out) + ".ids.txt").write_text("\n".join(f.ids) + "\n")
    console.print(f"wrote {out} {tuple(f.array.shape)} ({len(f.ids)} samples)")
