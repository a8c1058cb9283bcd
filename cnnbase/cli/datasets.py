"""``cnnbase datasets list | verify | download``: the benchmarks of ``datasets.yaml`` and their files.

Precedence: ``--root`` > the entry's ``root:`` in ``datasets.yaml`` (relative roots under ``$CNNBASE_DATA``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import app
from ._console import console, err_console
from ._options import DatasetsOpt, RootOpt

datasets_app = typer.Typer(
    help="The benchmark datasets: where they are, whether their files match the published counts, how to get them.",
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")

NameArg = Annotated[str, typer.Argument(help="A dataset from datasets.yaml (see `cnnbase datasets list`), or an image folder / list file.")]
DownloadNameArg = Annotated[str, typer.Argument(help="A dataset from datasets.yaml (see `cnnbase datasets list`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ImagesOpt = Annotated[bool, typer.Option("--images/--no-images", help="Count missing image files (no decoding).")]

_STYLE = {"ok": "green", "mismatch": "bold red", "unknown": "yellow", "unpublished": "dim"}


@datasets_app.command("list")
def list_datasets(datasets: DatasetsOpt = None) -> None:
    """Every dataset in datasets.yaml: task, adapter, metric, root, and whether its files are found there."""
    from ..config import datasets_file, load_dataset_configs
    from ..datasets.verify import locate

    configs = load_dataset_configs(datasets)
    table = Table(title=f"datasets ({escape(str(datasets_file(datasets)))})", title_justify="left")
    for col in ("name", "task", "adapter", "metric", "found", "root"):
        table.add_column(col, overflow="fold")  # a narrow terminal folds cells rather than hiding the root
    missing = []
    for name, cfg in configs.items():
        found, what = locate(cfg)
        if not found and cfg.root.exists():
            missing.append(f"{name}: {what}")
        table.add_row(
            escape(name), escape(str(cfg.task)), escape(str(cfg.adapter)), escape(str(cfg.metric)),
            "[green]yes[/]" if found else "[red]no[/]", escape(str(cfg.root)),
        )
    console.print(table)
    for line in missing:
        console.print(f"[dim]{escape(line)}[/]", highlight=False)
    if missing or not all(locate(c)[0] for c in configs.values()):
        console.print("[dim]get a dataset with `cnnbase datasets download NAME`; roots are relative to $CNNBASE_DATA unless absolute[/]")


@datasets_app.command("verify")
def verify_dataset(name: NameArg, root: RootOpt = None, json_out: JsonOpt = False, images: ImagesOpt = True, datasets: DatasetsOpt = None) -> None:
    """Read the annotation files (images may be absent) and compare every count with the published one.

    Exit status 1 when the annotations are unreadable or a count does not match.
    """
    from ..datasets.verify import verify

    rep = verify(name, root=root, datasets=datasets, check_images=images)
    if json_out:
        console.print_json(json.dumps(rep.to_dict()))
        if not rep.ok:
            raise typer.Exit(1)
        return
    if not rep.readable:
        from ..errors import DatasetError

        raise DatasetError(rep.error or f"{name}: unreadable")
    head = f"[bold]{escape(rep.name)}[/] ({escape(str(rep.task))}, adapter {escape(str(rep.adapter or '-'))}) at {escape(rep.root)}"
    table = Table(title=head, title_justify="left")
    items = "objects" if rep.task == "attributes" else "images"  # aPascal/aYahoo count annotated objects, several per file
    for col in ("split", items, "missing files", "published", "match"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for c in rep.splits:
        table.add_row(escape(c.what), _n(c.found), _n(c.missing_images), _n(c.published), f"[{_STYLE[c.status]}]{c.status}[/]")
    if rep.counts:
        table.add_section()
        for c in rep.counts:
            table.add_row(escape(c.what), _n(c.found), "", _n(c.published), f"[{_STYLE[c.status]}]{c.status}[/]")
    console.print(table)
    for note in rep.notes:
        console.print(f"[dim]note:[/] {escape(note)}", highlight=False)
    if rep.ok:
        statuses = {c.status for c in rep.splits + rep.counts}
        if "ok" not in statuses:
            console.print("[yellow]annotations readable; nothing published to compare with[/]")
        elif "unknown" in statuses:
            console.print("[green]annotations match the published counts[/] [yellow](except what cannot be counted without the images)[/]")
        else:
            console.print("[green]annotations match the published counts[/]")
    else:
        bad = ", ".join(c.what for c in rep.splits + rep.counts if c.status == "mismatch")
        err_console.print(f"[bold red]mismatch:[/] {escape(bad)} differ from the published counts (datasets.yaml)")
        raise typer.Exit(1)


@datasets_app.command("download")
def download(
    name: DownloadNameArg,
    root: RootOpt = None,
    retries: Annotated[int, typer.Option("--retries", help="Reconnect this many times when a transfer breaks (each resumes).")] = 5,
    datasets: DatasetsOpt = None,
) -> None:
    """Fetch from the official location (progress bar, checksum, resume) and unpack into the expected layout.

    Datasets without a public download (licence, registration, moved servers) print where to get them and
    where to put them, and exit with status 1.
    """
    from ..config import load_dataset_configs
    from ..datasets.download import download_dataset, file_specs, manual_instructions, progress_bar
    from ..datasets.verify import locate
    from ..errors import ConfigError

    configs = load_dataset_configs(datasets)
    if name not in configs:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(configs)}")
    cfg = configs[name]
    target = Path(root).expanduser() if root else cfg.root
    if not file_specs(cfg):
        found, _ = locate(cfg, target)
        if found:
            console.print(
                f"[green]{escape(name)}[/] is already at {escape(str(target))}; nothing to download "
                f"(check it with `cnnbase datasets verify {escape(name)}`)", soft_wrap=True
            )
            return
        console.print(f"[bold]{escape(name)}[/] cannot be downloaded automatically.\n{escape(manual_instructions(cfg, target))}", highlight=False)
        raise typer.Exit(1)
    with progress_bar(err_console) as bar:
        results = download_dataset(cfg, target, progress=bar, retries=retries)
    for r in results:
        state = "already there" if r.skipped else "downloaded"
        line = f"{escape(str(r.spec.filename))}: {state}, sha256 {r.sha256}"
        if not r.pinned:
            line += " [yellow](no checksum pinned in datasets.yaml; pin this one)[/]"
        if r.unpacked_into is not None:
            line += f", unpacked into {escape(str(r.unpacked_into))}"
        console.print(line, highlight=False)
    console.print(f"next: `cnnbase datasets verify {escape(name)}" + (f" --root {escape(str(target))}" if root else "") + "`", soft_wrap=True)


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"
