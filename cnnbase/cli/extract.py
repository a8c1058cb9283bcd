"""``cnnbase extract``: features into the store."""

from __future__ import annotations

import typer

from . import app
from ._console import console
from ._options import (
    BadImageOpt,
    BatchOpt,
    CompileOpt,
    DatasetArg,
    DatasetsOpt,
    DeviceOpt,
    DtypeOpt,
    JitterOpt,
    LayersOpt,
    ModelArg,
    PoolOpt,
    PrecisionOpt,
    PreprocessOpt,
    ProgressOpt,
    RootOpt,
    SeedOpt,
    StoreOpt,
    WeightsOpt,
    WorkersOpt,
)


def feature_options(params: dict):  # type: ignore[no-untyped-def]
    """FeatureOptions from a command's parameters (those named like its fields; None = the default)."""
    from dataclasses import fields

    from ..runner import FeatureOptions

    names = {f.name for f in fields(FeatureOptions)}
    return FeatureOptions(**{k: v for k, v in params.items() if k in names and v is not None})


def make_context(store, root, datasets, progress=True, results=None):  # type: ignore[no-untyped-def]
    from ..config import default_store
    from ..features.store import FeatureStore
    from ..runner import Context

    return Context(store=FeatureStore(store or default_store()), root=root, datasets_file=datasets, progress=progress, results=results)


@app.command()
def extract(
    model: ModelArg,
    dataset: DatasetArg,
    layer: LayersOpt = None,
    split: str | None = typer.Option(None, "--split", help="Comma-separated splits (default: the protocol's train and test splits)."),
    weights: WeightsOpt = None,
    store: StoreOpt = None,
    root: RootOpt = None,
    datasets: DatasetsOpt = None,
    preprocess: PreprocessOpt = None,
    jitter: JitterOpt = "none",
    pool: PoolOpt = "none",
    precision: PrecisionOpt = "auto",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = None,
    on_bad_image: BadImageOpt = "fail",
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
) -> None:
    """Extract features of MODEL on DATASET into the content-addressed store.

    Raw activations are stored (normalisation happens at evaluation time). The store key covers everything that
    changes the numbers, so a rerun with the same options does no work, a changed option makes a new entry, and an
    interrupted run resumes at the first missing shard.

    Examples:
      cnnbase extract alexnet voc2007 --layer fc6,fc7 --preprocess square:221 --jitter razavian
      cnnbase extract resnet50 ~/photos/by_class --weights random
    """
    from ..runner import extract as run_extract

    ctx = make_context(store, root, datasets, progress)
    opts = feature_options(locals())
    entries = run_extract(model, dataset, layers=layer, splits=split.split(",") if split else None, opts=opts, ctx=ctx)
    for e in entries:
        m = e.manifest() or {}
        console.print(
            f"{m.get('fields', {}).get('split', '?'):>10}  {e.path.name}  shape {tuple(m.get('shape', []))}  key {e.key[:12]}",
            markup=False, soft_wrap=True,
        )
