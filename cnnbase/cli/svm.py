"""``cnnbase train-svm`` and ``cnnbase evaluate``."""

from __future__ import annotations

import typer
from rich.markup import escape

from . import app
from ._console import console
from ._options import (
    BadImageOpt,
    BatchOpt,
    CGridOpt,
    CompileOpt,
    DatasetArg,
    DatasetsOpt,
    DeviceOpt,
    DtypeOpt,
    FoldsOpt,
    JitterOpt,
    LayerOpt,
    ModelArg,
    ModeOpt,
    NormOpt,
    PoolOpt,
    PrecisionOpt,
    PreprocessOpt,
    ProgressOpt,
    ResultsOpt,
    RootOpt,
    SeedOpt,
    SolverOpt,
    StoreOpt,
    WeightsOpt,
    WorkersOpt,
    parse_c,
)
from .extract import feature_options, make_context


def svm_options(C, folds, mode, solver, norm, seed):  # type: ignore[no-untyped-def]
    from ..runner import SVMOptions

    kw = {"cv_folds": folds, "mode": mode, "solver": solver, "normalization": norm, "seed": seed}
    c = parse_c(C)
    if c is not None:
        kw["C"] = c
    return SVMOptions(**kw)


@app.command("train-svm")
def train_svm(
    model: ModelArg,
    dataset: DatasetArg,
    layer: LayerOpt = None,
    train_split: str | None = typer.Option(None, "--train-split", help="Split to train on (default: the protocol's)."),
    C: CGridOpt = None,
    folds: FoldsOpt = 3,
    mode: ModeOpt = "ovr",
    solver: SolverOpt = "auto",
    norm: NormOpt = "l2",
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
    """Train one-vs-rest (or one-vs-one) linear SVMs on the training split, C chosen per class by k-fold CV.

    Features are extracted first if the store lacks them. The SVMs are saved next to the features and reused by
    `evaluate`; a rerun with nothing changed does not retrain.

    Example:
      cnnbase train-svm alexnet voc2007 --layer fc6 --C 0.2
    """
    from ..runner import train_svm as run_train

    ctx = make_context(store, root, datasets, progress)
    opts = feature_options(locals())
    th = run_train(model, dataset, layer=layer, train_split=train_split, opts=opts, svm=svm_options(C, folds, mode, solver, norm, seed), ctx=ctx)
    verb = "reused" if th.reused else "trained"
    console.print(f"{verb} {len(th.head.C_)} SVM(s), {_describe_c(th.head, folds)}: {escape(str(th.path))}", soft_wrap=True)


@app.command()
def evaluate(
    model: ModelArg,
    dataset: DatasetArg,
    task: str | None = typer.Option(
        None, "--task", help="classification, multilabel, attributes or retrieval (default: the dataset's task)."
    ),
    layer: LayerOpt = None,
    metric: str | None = typer.Option(None, "--metric", help="Override the benchmark's official metric (the record and its leaderboard column name the metric used)."),
    train_split: str | None = typer.Option(None, "--train-split", help="Training split (retrieval on a labelled set: the database)."),
    test_split: str | None = typer.Option(None, "--test-split", help="Test split (retrieval on a labelled set: the queries)."),
    C: CGridOpt = None,
    folds: FoldsOpt = 3,
    mode: ModeOpt = "ovr",
    solver: SolverOpt = "auto",
    norm: NormOpt = "l2",
    results: ResultsOpt = None,
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
    """Score MODEL's features on DATASET with the benchmark's official metric and append a record.

    Classification and multilabel tasks train (or reload) SVMs and score the test split; retrieval ranks the
    database by L2 distance of L2-normalised features (on a labelled set: test images query the training images).

    Examples:
      cnnbase evaluate alexnet voc2007 --layer fc6
      cnnbase evaluate alexnet oxford5k --task retrieval
    """
    from ..metrics import METRICS
    from ..runner import evaluate as run_evaluate

    ctx = make_context(store, root, datasets, progress, results)
    opts = feature_options(locals())
    rec = run_evaluate(model, dataset, task=task, layer=layer, metric=metric, train_split=train_split, test_split=test_split,
                       opts=opts, svm=svm_options(C, folds, mode, solver, norm, seed), normalization=norm, ctx=ctx)
    scale = METRICS.get(rec["metric"]).scale
    extra = ", ".join(f"{k} {v * (scale if 'map' in k or 'acc' in k else 1):.2f}" for k, v in rec.get("extra", {}).items())
    skipped = f"  ({rec['n_skipped']} bad images skipped)" if rec.get("n_skipped") else ""
    console.print(
        f"[bold]{escape(str(rec['dataset']))}[/] {escape(str(rec['task']))}  {escape(str(rec['backbone']))} {escape(str(rec['layer']))}  "
        f"[bold green]{escape(str(rec['metric']))} = {rec['value'] * scale:.2f}[/]" + (f"  ({escape(extra)})" if extra else "") + skipped,
        soft_wrap=True,
    )


def _describe_c(head, folds: int) -> str:  # type: ignore[no-untyped-def]
    """``C = 0.2 (fixed, no CV)``, or the C values chosen and the grid they were chosen from:
    ``chosen C 0.01 (3 SVMs), 10 (1 SVM) by 3-fold CV from the grid 0.01, 0.1, 1, 10, 100``."""
    from collections import Counter

    chosen = Counter(float(c) for c in head.C_)
    cs = getattr(head, "Cs_", None)
    grid = sorted(float(c) for c in cs) if cs is not None and len(cs) else sorted(chosen)
    if len(grid) == 1:
        return f"C = {grid[0]:g} (fixed, no CV)"
    picks = ", ".join(f"{c:g} ({n} SVM{'s' if n > 1 else ''})" for c, n in sorted(chosen.items()))
    return f"chosen C {picks} by {folds}-fold CV from the grid {', '.join(f'{c:g}' for c in grid)}"
