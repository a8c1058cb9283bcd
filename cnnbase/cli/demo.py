"""``cnnbase demo``: the whole pipeline offline, on generated images, in about a minute on 2 cores."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from . import app
from ._console import console, err_console


@app.command()
def demo(
    out: Path | None = typer.Option(None, "--out", help="Working folder (default: $CNNBASE_HOME/demo)."),
    model: str = typer.Option("alexnet", "--model", help="Backbone to demo."),
    per_class: int = typer.Option(
        40, "--per-class", min=2, help="Generated images per class (a quarter of them, at least one, for testing; 2 or more)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run extract → train-svm → evaluate (classification and retrieval) → leaderboard on a generated image set.

    Works offline. Uses the model's pretrained weights if they are in the torch cache; otherwise says so and uses
    random weights (every record and the table mark them).
    """
    from ..backbones import BACKBONES, is_cached, weights_cache_path
    from ..config import cnnbase_home
    from ..demo_data import make_texture_dataset, mean_colour_baseline
    from ..results import build_table, read_records, render
    from ..runner import FeatureOptions, SVMOptions, evaluate, extract
    from .extract import make_context

    work = out or cnnbase_home() / "demo"
    data = make_texture_dataset(work / "textures", per_class=per_class, test_per_class=max(1, per_class // 4))
    spec = BACKBONES.get(model)
    weights = "random"
    if spec.weights_enum is not None:
        w = spec.weights_enum.DEFAULT
        if is_cached(w):
            weights = None
            console.print(f"using pretrained {w} from the torch cache", soft_wrap=True)
        else:
            console.print(
                f"[yellow]no pretrained {escape(model)} weights in the torch cache ({escape(str(weights_cache_path(w)))}): "
                "this demo uses RANDOM weights[/] (download them there for real features)", soft_wrap=True
            )
    results = work / "records.jsonl"
    if results.exists():
        results.unlink()
    ctx = make_context(work / "store", None, None, progress, results)
    opts = FeatureOptions(weights=weights)
    svm = SVMOptions()
    console.print(f"data: {escape(str(data))} (4 texture classes, colours random; mean-colour baseline accuracy "
                  f"{100 * mean_colour_baseline(data):.0f}%, chance 25%)", soft_wrap=True)
    layers = ["fc6", "fc7"] if "fc7" in _aliases(model) else [None]
    if None not in layers:
        extract(model, str(data), layers=layers, opts=opts, ctx=ctx)  # both layers from one forward pass
    for layer in layers:
        for task in ("classification", "retrieval"):
            rec = evaluate(model, str(data), task=task, layer=layer, opts=opts, svm=svm, ctx=ctx, label="demo")
            err_console.print(f"  {rec['layer']:>5} {task:<15} {rec['metric']} = {100 * rec['value']:.1f}")
    table = build_table(read_records(results))
    console.print()
    console.print(render(table, "md"), markup=False, highlight=False)
    console.print(f"records: {escape(str(results))}", soft_wrap=True)
    console.print(f"render again: cnnbase leaderboard --results {escape(str(results))} --format latex", soft_wrap=True)


def _aliases(model: str) -> set[str]:
    from ..backbones import BACKBONES

    spec = BACKBONES.get(model)
    return {"fc6", "fc7"} if spec.family in ("alexnet", "vgg") else set()
