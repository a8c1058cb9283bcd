"""``cnnbase leaderboard``: records → a table for the terminal or a paper."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from . import app
from ._console import console
from ._options import ResultsOpt


@app.command()
def leaderboard(
    results: ResultsOpt = None,
    format: str = typer.Option("table", "--format", "-f", help="table (terminal), md, csv or latex."),
    metric: str | None = typer.Option(None, "--metric", help="Only this metric (e.g. voc07_map)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Comma-separated datasets, in column order."),
    reference: str | None = typer.Option(None, "--reference", help="Print a paper's published rows beside yours, with deltas (e.g. razavian2014)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the table to this file instead of printing it."),
) -> None:
    """Render the records as a table: rows = backbone + layer, columns = dataset (metric).

    Example:
      cnnbase leaderboard --format latex --out table.tex
    """
    from ..results import build_table, read_records, render

    ref = _load_reference(reference) if reference else None
    table = build_table(read_records(results), metric=metric, datasets=dataset.split(",") if dataset else None, reference=ref)
    if not table.rows:
        console.print("no records match")
        raise typer.Exit(0)
    if format == "table":
        t = Table(*table.columns, title="cnnbase leaderboard", header_style="bold")
        for row in table.rows:
            t.add_row(*row)
        console.print(t)
        for n in table.notes:
            console.print(f"[dim]{n}[/]")
        return
    text = render(table, format)
    if out:
        out.write_text(text)
        console.print(f"wrote {out}")
    else:
        print(text, end="")


def _load_reference(name: str) -> dict:
    import yaml

    from ..config import resource_path
    from ..errors import ConfigError

    p = Path(name)
    if not p.is_file():
        try:
            p = resource_path(f"tasks/reference/{name}.yaml")
        except ConfigError:
            raise ConfigError(f"no reference {name!r}; give a YAML file or a name under tasks/reference/") from None
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rows", {}), dict):
        raise ConfigError(f"reference {p}: expected a mapping with rows: {{label: {{dataset: value}}}}")
    # rows are printed; per_class / metrics / baselines / unmatched ride along for callers (build_table ignores them)
    extra = {k: data[k] for k in ("per_class", "metrics", "baselines", "unmatched") if k in data}
    return {"name": data.get("name", name), "rows": data.get("rows", {}), **extra}
