"""Shared option declarations (Annotated aliases) so every command spells an option the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelArg = Annotated[str, typer.Argument(help="Backbone name (see `cnnbase models list`), e.g. alexnet, resnet50.")]
DatasetArg = Annotated[
    str, typer.Argument(help="A dataset from datasets.yaml (e.g. voc2007), an image folder (root/<class>/*), or a list file.")
]


def _nonempty_layer(value: str | None) -> str | None:
    """Refuse ``--layer ''`` (or ``--layer ,``): it would select no layer and do nothing, silently."""
    if value is not None and not any(v.strip() for v in value.split(",")):
        from ..errors import ConfigError

        raise ConfigError(
            f"empty --layer {value!r}; give a layer alias or graph node (see `cnnbase models layers MODEL`), "
            "or leave --layer out for the model's default"
        )
    return value


LayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        "-l",
        callback=_nonempty_layer,
        help="Layer alias or graph node (see `cnnbase models layers MODEL`); default: the model's default layer (fc6 for "
        "AlexNet/VGG, the pooled vector `pool` for ResNet and the others; see `cnnbase models list`).",
    ),
]
LayersOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        "-l",
        callback=_nonempty_layer,
        help="Comma-separated layers, all from one forward pass (e.g. fc6,fc7,pool5); default: the model's default "
        "layer (see `cnnbase models list`).",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="DEFAULT, a torchvision weights name (IMAGENET1K_V1), a local .pth state_dict, or `random` (recorded as such).",
    ),
]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help="Feature store folder (default: $CNNBASE_HOME/features or ~/.cache/cnnbase/features).")
]
ResultsOpt = Annotated[Path | None, typer.Option("--results", help="Records file (default: results/records.jsonl).")]
RootOpt = Annotated[str | None, typer.Option("--root", help="Dataset root folder, overriding datasets.yaml.")]
DatasetsOpt = Annotated[
    str | None,
    typer.Option("--datasets", help="The datasets.yaml to read (default: $CNNBASE_DATASETS, else ./datasets.yaml, else the packaged one)."),
]
PreprocessOpt = Annotated[
    str | None,
    typer.Option(
        "--preprocess",
        help="Override the weights' preprocessing: square:SIZE (whole image, no crop, as Razavian), center_crop:RESIZE:CROP, bilinear|bicubic.",
    ),
]
JitterOpt = Annotated[str, typer.Option("--jitter", help="Views per image: none, flip, or razavian (16 views: crops, rotations, mirrors).")]
PoolOpt = Annotated[str, typer.Option("--pool", help="For convolutional maps: none (flatten), avg or max (global pooling).")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto (default: bf16 where the hardware has it, kept only if a probe on the dataset's own images shows it faithful to fp32; one probe decides for every split), fp32, bf16 or fp16. Recorded; part of the store key.",
    ),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Storage dtype of features: float32 or float16.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Network inputs per forward pass (an image with 16 jitter views counts 16).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Device for feature extraction: auto (CUDA when torch sees it, else the CPU), cpu, cuda or cuda:N (recorded in the manifest).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", min=0, help="Decoding processes running alongside the model; 0 decodes in this process, on every core, in turns with the model. Default on the CPU: planned from a short timing of decoding and the model for 1,000 network inputs or more (usually 0 on few cores), recorded in the manifest; 0 on smaller runs.")]
CompileOpt = Annotated[
    bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model (default: only when the eager model would run a minute or more, where compiling repays its 5-25 s).")
]
BadImageOpt = Annotated[
    str, typer.Option("--on-bad-image", help="fail (default: list every bad file and stop) or skip (record them and go on).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random weights, CV folds and subsampling.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
CGridOpt = Annotated[
    str | None, typer.Option("--C", help="One C (e.g. 0.2) or a comma-separated grid chosen by k-fold CV (default 0.01,0.1,1,10,100).")
]
FoldsOpt = Annotated[int, typer.Option("--folds", help="Cross-validation folds for choosing C.")]
ModeOpt = Annotated[str, typer.Option("--mode", help="ovr (one-vs-rest) or ovo (one-vs-one with voting, as Razavian for MIT-67/CUB/Flowers).")]
SolverOpt = Annotated[str, typer.Option("--solver", help="auto (batched torch solver), liblinear (scikit-learn's LinearSVC) or torch.")]
NormOpt = Annotated[
    str,
    typer.Option(
        "--norm",
        help="How features are normalised when read from the store (which keeps raw activations), for SVM training and "
        "testing alike and for retrieval ranking: l2, l2+power2 (L2, signed square, L2) or none.",
    ),
]


def parse_c(value: str | None) -> tuple[float, ...] | float | None:
    """``"0.2"`` → 0.2 (fixed C); ``"0.01,0.1,1"`` → a grid."""
    if value is None:
        return None
    from ..errors import ConfigError

    try:
        vals = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"bad --C {value!r}; give a number or a comma-separated list like 0.01,0.1,1") from None
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"bad --C {value!r}; C values must be positive")
    return vals[0] if len(vals) == 1 else vals
