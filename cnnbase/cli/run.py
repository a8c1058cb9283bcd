"""``cnnbase run CARD``: every dataset of a protocol card, resumably (cnnbase.protocol.run_card)."""

from __future__ import annotations

import typer

from . import app
from ._console import console
from ._options import (
    BadImageOpt,
    BatchOpt,
    DatasetsOpt,
    DeviceOpt,
    PreprocessOpt,
    ProgressOpt,
    ResultsOpt,
    SeedOpt,
    StoreOpt,
    WeightsOpt,
    WorkersOpt,
    _nonempty_layer,
    parse_c,
)


@app.command()
def run(
    card: str = typer.Argument(..., help="A protocol card: a YAML file (tasks/razavian2014.yaml) or a name under tasks/ (razavian2014)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Backbone (default: the card's model), e.g. alexnet, resnet50."),
    weights: WeightsOpt = None,
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Only these datasets of the card, comma-separated (not a deviation)."),
    variant: str | None = typer.Option(None, "--variant", help="Only these variants, comma-separated, e.g. CNN-SVM,CNNaug-ss (not a deviation)."),
    layer: str | None = typer.Option(None, "--layer", "-l", callback=_nonempty_layer, help="Another layer than the card's (fc6 for AlexNet/VGG, pool otherwise). A deviation when it differs."),
    C: str | None = typer.Option(None, "--C", help="One C for every SVM dataset, or a grid (0.1,1,10) chosen by CV. A deviation."),
    c_selection: str | None = typer.Option(None, "--c-selection", help="paper (the card's C values) or cv (k-fold CV over the card's grid). A deviation when it differs."),
    preprocess: PreprocessOpt = None,
    set_: list[str] | None = typer.Option(None, "--set", help="Change any card setting: KEY=VALUE (VALUE is YAML), e.g. retrieval.pca.dim=256. A deviation."),
    redo: bool = typer.Option(False, "--redo", help="Recompute (dataset, variant) pairs already in the results file (cached features/SVMs are still reused)."),
    store: StoreOpt = None,
    results: ResultsOpt = None,
    datasets: DatasetsOpt = None,
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    compile: bool = typer.Option(
        False, "--compile/--no-compile", help="torch.compile the model for every extraction of the card (off unless given; "
        "unlike extract/train-svm/evaluate, run does not decide it from the run's length)."
    ),
    on_bad_image: BadImageOpt = "fail",
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
) -> None:
    """Run every dataset of CARD that is present (a line for each that is not), each of its variants, resumably.

    Features come from the store, SVMs and PCA-whitening are reloaded, and records already in the results file
    are not recomputed. Options that change a pinned setting (--layer, --C, --c-selection, --preprocess, --set) are
    recorded in each record as deviations and the leaderboard marks those rows with '*'.

    Precedence: these options > the card > datasets.yaml > built-in defaults.

    Examples:
      cnnbase run tasks/razavian2014.yaml --model alexnet
      cnnbase run razavian2014 --model resnet50 --dataset voc2007,mit67 --variant CNN-SVM
      cnnbase run razavian2014 --model alexnet --layer fc7 --set retrieval.pca.dim=256
    """
    from ..features.store import FeatureStore
    from ..metrics import METRICS
    from ..protocol import cli_overrides, load_card, run_card
    from ..runner import Context, FeatureOptions

    crd = load_card(card, datasets=datasets)
    overrides = {} if crd.get("protocol") == "transfer" and not (layer or C or c_selection or preprocess or set_) else cli_overrides(
        crd, layer=layer, C=parse_c(C), c_selection=c_selection, preprocess=preprocess, sets=set_ or ()
    )
    ctx = Context(progress=progress, results=results, datasets_file=datasets)
    if store is not None:
        ctx.store = FeatureStore(store)
    opts = FeatureOptions(seed=seed, batch_size=batch_size, workers=workers, compile=compile, on_bad_image=on_bad_image, device=device)
    recs = run_card(
        crd,
        model,
        weights=weights,
        datasets=_csv(dataset),
        variants=_csv(variant),
        overrides=overrides,
        opts=opts,
        ctx=ctx,
        redo=redo,
        log=lambda line: console.print(line, highlight=False, markup=False),
    )
    for r in recs:
        scale = METRICS.get(r["metric"]).scale
        extra = r.get("extra") or {}
        pct = f"  ({extra['recall_at_4_percent']:.1f}% recall at top 4)" if "recall_at_4_percent" in extra else ""
        devs = (r.get("card") or {}).get("deviations") or []
        dev = f"  * deviates: {'; '.join(devs)}" if devs else ""
        console.print(
            f"{r['dataset']:<11} {r.get('label', ''):<11} {r['backbone']} {r['layer']}  "
            f"{r['metric']} = {r['value'] * scale:.2f}{pct}{dev}",
            highlight=False,
            markup=False,
        )
    if not recs:  # exit 1: a script that runs a card must not take "nothing present" for success
        from ..errors import DatasetError

        raise DatasetError(
            "nothing was run: no dataset of the card is present (see the skipped lines above); get them with "
            "`cnnbase datasets download NAME`, or point --datasets at a datasets.yaml whose roots hold them"
        )


def _csv(value: str | None) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None
