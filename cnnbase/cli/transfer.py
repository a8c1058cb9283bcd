"""``cnnbase transfer train`` and ``cnnbase transfer evaluate``: the Oquab et al. 2014 protocol.

Precedence for every setting: command-line option > protocol card (``--card``, default ``tasks/oquab2014.yaml``)
> built-in defaults. Options left unset take the card's (published) value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import app
from ._console import console
from ._options import (
    BadImageOpt,
    DatasetArg,
    DatasetsOpt,
    ModelArg,
    ProgressOpt,
    ResultsOpt,
    RootOpt,
    StoreOpt,
    WeightsOpt,
)

transfer_app = typer.Typer(
    help="Oquab et al. 2014: frozen layers + adaptation layers trained on ~500 labelled multi-scale patches per image, "
    "image score = mean of p(class|patch)^5 (settings from tasks/oquab2014.yaml).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(transfer_app, name="transfer")

PatchWorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", min=0, help="Processes cutting and resizing patches alongside the model (default: half the cores, at least 1; 0: in this process)."),
]
CardOpt = Annotated[str, typer.Option("--card", help="Protocol card (name under tasks/ or a YAML path) giving the defaults.")]
FrozenLayerOpt = Annotated[
    str | None, typer.Option("--layer", "-l", help="Last frozen layer (default: fc7 for AlexNet/VGG, else the pooled vector).")
]
ScalesOpt = Annotated[str | None, typer.Option("--scales", help="Comma-separated λ values: patch side = min(w, h)/λ (card: 1,1.3,...,4).")]
PatchesOpt = Annotated[int | None, typer.Option("--patches", help="Target patches per image (card: 500).")]
MinOverlapOpt = Annotated[float | None, typer.Option("--min-overlap", help="Minimum overlap of neighbouring patches (card: 0.5).")]
PatchFracOpt = Annotated[float | None, typer.Option("--patch-fraction", help="Rule (i): |P∩B| ≥ this × |P| (card: 0.2).")]
BoxFracOpt = Annotated[float | None, typer.Option("--box-fraction", help="Rule (ii): |P∩B| ≥ this × |B| (card: 0.6).")]
OverlapMinOpt = Annotated[
    float | None, typer.Option("--overlap-min", help="Rule (iii): an object counts as overlapped when it covers this fraction of the patch (card: 0.2; 0 = any).")
]
AmbiguousOpt = Annotated[str | None, typer.Option("--ambiguous", help="A match that fails rule (iii): background (card) or drop.")]
DifficultOpt = Annotated[str | None, typer.Option("--difficult", help="VOC difficult boxes: object (card) or drop (patches touching them).")]
BgRateOpt = Annotated[float | None, typer.Option("--background-rate", help="Fraction of background patches kept for training (card: 0.1).")]
FinetuneOpt = Annotated[
    bool | None, typer.Option("--finetune-fc67/--frozen-fc67", help="Also train FC6 and FC7 (the paper's 'U' variant); default frozen.")
]
HiddenOpt = Annotated[int | None, typer.Option("--hidden", help="Units of FCa (card: 2048).")]
DropoutOpt = Annotated[float | None, typer.Option("--dropout", help="Dropout after FCa (card: 0.5).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Initial learning rate (card: 0.01), divided by 10 at each plateau.")]
PlateausOpt = Annotated[int | None, typer.Option("--plateaus", help="Stop at this many loss plateaus (card: 3 → 0.01, 0.001, 0.0001).")]
MomentumOpt = Annotated[float | None, typer.Option("--momentum", help="SGD momentum (card: 0.9, Krizhevsky's recipe).")]
WdOpt = Annotated[float | None, typer.Option("--weight-decay", help="Weight decay on weights (card: 5e-4).")]
TrainBatchOpt = Annotated[int | None, typer.Option("--train-batch", min=1, help="SGD mini-batch (card: 128).")]
MaxEpochsOpt = Annotated[int | None, typer.Option("--max-epochs", help="Safety cap on epochs (card: 100).")]
KOpt = Annotated[float | None, typer.Option("--k", help="Aggregation exponent: score = mean of p^k over patches (card: 5).")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help="fp32 (card) or bf16/fp16 for the frozen layers.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="Storage of patch activations: float16 (card) or float32.")]
ExtractBatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Patches per forward pass of the frozen layers.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of background sampling, initialisation, shuffling and dropout.")]
WeightsSeedOpt = Annotated[int, typer.Option("--weights-seed", help="Seed of random initialisation when --weights random.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda[:N].")]
TransferCompileOpt = Annotated[
    bool | None, typer.Option("--compile/--no-compile", help="torch.compile the frozen layers for patch extraction (default: off).")
]
TrainSplitOpt = Annotated[str | None, typer.Option("--train-split", help="Training split (default: the dataset's, trainval for VOC).")]


# command parameter → TransferOptions field, for the settings both commands take (``k`` only in evaluate)
_SETTINGS = {
    **{name: name for name in (
        "layer", "scales", "min_overlap", "patch_fraction", "box_fraction", "overlap_min", "ambiguous", "difficult",
        "background_rate", "finetune_fc67", "hidden", "dropout", "lr", "plateaus", "momentum", "weight_decay",
        "max_epochs", "k", "precision", "dtype", "weights", "weights_seed", "seed", "workers", "device", "compile",
        "on_bad_image",
    )},
    "patches": "target", "train_batch": "batch_size", "batch_size": "extract_batch",
}


def _opts(card, params):  # type: ignore[no-untyped-def]
    """TransferOptions from the card and a command's parameters (its ``locals()``), the options given overriding."""
    from ..errors import ConfigError
    from ..transfer import options_from_card

    kw = {field: params[name] for name, field in _SETTINGS.items() if name in params}
    scales = kw.pop("scales")
    if scales is not None:
        try:
            kw["scales"] = tuple(float(v) for v in scales.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"bad --scales {scales!r}; give comma-separated numbers ≥ 1, e.g. 1,1.3,1.6,2") from None
    return options_from_card(card, **kw)


def _context(store, root, datasets, progress, results=None):  # type: ignore[no-untyped-def]
    from .extract import make_context

    return make_context(store, root, datasets, progress, results)


@transfer_app.command("train")
def train_cmd(
    model: ModelArg,
    dataset: DatasetArg,
    card: CardOpt = "oquab2014",
    layer: FrozenLayerOpt = None,
    train_split: TrainSplitOpt = None,
    scales: ScalesOpt = None,
    patches: PatchesOpt = None,
    min_overlap: MinOverlapOpt = None,
    patch_fraction: PatchFracOpt = None,
    box_fraction: BoxFracOpt = None,
    overlap_min: OverlapMinOpt = None,
    ambiguous: AmbiguousOpt = None,
    difficult: DifficultOpt = None,
    background_rate: BgRateOpt = None,
    finetune_fc67: FinetuneOpt = None,
    hidden: HiddenOpt = None,
    dropout: DropoutOpt = None,
    lr: LrOpt = None,
    plateaus: PlateausOpt = None,
    momentum: MomentumOpt = None,
    weight_decay: WdOpt = None,
    train_batch: TrainBatchOpt = None,
    max_epochs: MaxEpochsOpt = None,
    precision: PrecisionOpt = None,
    dtype: DtypeOpt = None,
    weights: WeightsOpt = None,
    weights_seed: WeightsSeedOpt = 0,
    seed: SeedOpt = 0,
    store: StoreOpt = None,
    root: RootOpt = None,
    datasets: DatasetsOpt = None,
    batch_size: ExtractBatchOpt = 256,
    workers: PatchWorkersOpt = None,
    device: DeviceOpt = "auto",
    compile: TransferCompileOpt = None,
    on_bad_image: BadImageOpt = "fail",
    progress: ProgressOpt = True,
) -> None:
    """Train the adaptation layers (FCa, FCb) on labelled patches of the training split.

    Patch activations of the frozen layers are extracted into the feature store first (resumable; reused by every
    later run, whatever the head settings or seed). Training resumes from its last epoch checkpoint; a finished
    head with the same settings is reused.

    Examples:
      cnnbase transfer train alexnet voc2007
      cnnbase transfer train alexnet voc2007 --finetune-fc67 --seed 1
    """
    from ..transfer import load_card, train

    crd = load_card(card)
    o = _opts(crd, locals())
    ctx = _context(store, root, datasets, progress)
    t = train(model, dataset, opts=o, train_split=train_split, ctx=ctx)
    c = t.counts
    verb = "reused" if t.reused else "trained"
    last = t.fit.history[-1] if t.fit.history else {}
    console.print(
        f"{verb} head on {t.n_train_patches:,} patches ({c.get('positive', 0):,} positive, {c.get('kept_background', 0):,} background "
        f"kept of {c.get('background', 0):,}; {c.get('two_labels', 0):,} two-label patches dropped), "
        f"{len(t.fit.history)} epochs, final loss {last.get('loss', float('nan')):.4f} at lr {last.get('lr', float('nan')):g}: "
        f"{escape(str(t.path))}",
        soft_wrap=True,
    )


@transfer_app.command("evaluate")
def evaluate_cmd(
    model: ModelArg,
    dataset: DatasetArg,
    card: CardOpt = "oquab2014",
    layer: FrozenLayerOpt = None,
    train_split: TrainSplitOpt = None,
    test_split: str | None = typer.Option(None, "--test-split", help="Test split (default: the dataset's, test for VOC)."),
    scales: ScalesOpt = None,
    patches: PatchesOpt = None,
    min_overlap: MinOverlapOpt = None,
    patch_fraction: PatchFracOpt = None,
    box_fraction: BoxFracOpt = None,
    overlap_min: OverlapMinOpt = None,
    ambiguous: AmbiguousOpt = None,
    difficult: DifficultOpt = None,
    background_rate: BgRateOpt = None,
    finetune_fc67: FinetuneOpt = None,
    hidden: HiddenOpt = None,
    dropout: DropoutOpt = None,
    lr: LrOpt = None,
    plateaus: PlateausOpt = None,
    momentum: MomentumOpt = None,
    weight_decay: WdOpt = None,
    train_batch: TrainBatchOpt = None,
    max_epochs: MaxEpochsOpt = None,
    k: KOpt = None,
    precision: PrecisionOpt = None,
    dtype: DtypeOpt = None,
    maps: Path | None = typer.Option(None, "--maps", help="Write localisation maps (PNG) of the first test images into this folder."),
    maps_limit: int = typer.Option(20, "--maps-limit", help="How many test images get maps (their classes + top class)."),
    label: str | None = typer.Option(None, "--label", help="Row label in the leaderboard (default: oquab2014, or oquab2014-U)."),
    results: ResultsOpt = None,
    weights: WeightsOpt = None,
    weights_seed: WeightsSeedOpt = 0,
    seed: SeedOpt = 0,
    store: StoreOpt = None,
    root: RootOpt = None,
    datasets: DatasetsOpt = None,
    batch_size: ExtractBatchOpt = 256,
    workers: PatchWorkersOpt = None,
    device: DeviceOpt = "auto",
    compile: TransferCompileOpt = None,
    on_bad_image: BadImageOpt = "fail",
    progress: ProgressOpt = True,
) -> None:
    """Train (or reuse) the head, score test images by mean p(class|patch)^k, and record the benchmark's AP.

    VOC2007 (and other sets): 11-point AP; VOC2010+ (voc2012): area AP, as their devkits compute it.

    The record holds per-class AP, every setting, the card's name and hash, and the settings that deviate from it.

    Examples:
      cnnbase transfer evaluate alexnet voc2007
      cnnbase transfer evaluate alexnet voc2007 --maps maps/ --maps-limit 10
    """
    from ..transfer import evaluate, load_card

    crd = load_card(card)
    o = _opts(crd, locals())
    ctx = _context(store, root, datasets, progress, results)
    rec = evaluate(model, dataset, opts=o, card=crd, train_split=train_split, test_split=test_split, ctx=ctx,
                   maps=maps, maps_limit=maps_limit, label=label)
    dev = rec["card"]["deviations"]
    other, other_name = ("voc_area_map", "area AP") if rec["metric"] == "voc07_map" else ("voc07_map", "11-point AP")
    console.print(
        f"[bold]{escape(str(rec['dataset']))}[/] transfer ({escape(str(rec['label']))})  {escape(str(rec['backbone']))} {escape(str(rec['layer']))}  "
        f"[bold green]{rec['metric']} = {rec['value'] * 100:.2f}[/]  ({other_name} {rec['extra'].get(other, float('nan')) * 100:.2f}; "
        f"{rec['n_test']} test images, k = {rec['settings']['test']['k']:g})"
        + (f"  [yellow]deviates from {escape(str(rec['card']['name']))}: {escape('; '.join(dev))}[/]" if dev else ""),
        soft_wrap=True,
    )
    if rec.get("maps"):
        console.print(f"{len(rec['maps'])} localisation map(s) in {escape(str(maps))}", soft_wrap=True)
