"""``cnnbase models list|layers``."""

from __future__ import annotations

import typer
from rich.table import Table

from . import app
from ._console import console

models_app = typer.Typer(help="Backbones: what is registered, which weights are cached, which layers can be tapped.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models(pattern: str | None = typer.Argument(None, help="fnmatch pattern, e.g. 'resnet*'.")) -> None:
    """List backbones with their default weights, whether those are in the torch cache, and the default layer."""
    from ..backbones import BACKBONES, is_cached
    from ..errors import ConfigError

    names = BACKBONES.list(pattern)
    if not names:
        raise ConfigError(f"no model matches {pattern!r}; see `cnnbase models list` for every name")
    t = Table("model", "default weights", "cached", "default layer", "preprocess", header_style="bold")
    for name in names:
        spec = BACKBONES.get(name)
        if spec.weights_enum is not None:
            w = spec.weights_enum.DEFAULT
            weights, cached = str(w).split(".", 1)[1], "[green]yes[/]" if is_cached(w) else "no"
        else:
            weights, cached = "random only", "–"
        p = spec.preprocess
        pre = f"{p.mode} {p.resize}→{p.crop} {p.interpolation}" if p.mode == "center_crop" else f"square {p.crop}"
        t.add_row(name, weights, cached, spec.default_layer, pre)
    console.print(t)


@models_app.command("layers")
def layers(
    model: str = typer.Argument(..., help="Backbone name."),
    nodes: bool = typer.Option(False, "--nodes", help="Also list every raw graph node (valid --layer values too)."),
) -> None:
    """List MODEL's layer aliases (conv1…, fc6, fc7, pool …) with the graph node each taps and its output size."""
    import torch

    from ..backbones import load_backbone

    bb = load_backbone(model, "random")
    taps = bb.taps
    from torchvision.models.feature_extraction import create_feature_extractor

    size = bb.preprocess.crop
    gm = create_feature_extractor(bb.model, return_nodes={t.node: t.node for t in taps.values()}).eval()
    with torch.inference_mode():
        out = gm(torch.zeros(1, 3, size, size))
    t = Table("alias", "graph node", "output shape", "dim", "what it is", header_style="bold", title=f"{model} ({size}×{size} input)")
    for alias, tap in taps.items():
        shape = tuple(out[tap.node].shape[1:])
        dim = 1
        for s in shape:
            dim *= s
        default = " [bold](default)[/]" if alias == bb.spec.default_layer else ""
        t.add_row(alias + default, tap.node, str(shape), f"{dim:,}", tap.doc)
    console.print(t)
    if nodes:
        console.print("graph nodes: " + ", ".join(bb.graph_nodes), markup=False)
