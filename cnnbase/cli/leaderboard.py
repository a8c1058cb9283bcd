"""``cnnbase leaderboard``: records → a table for the terminal or a paper."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from . import app
from ._console import console
from ._options import ResultsOpt


@app.command()
def leaderboard(
    results: ResultsOpt = None,
    format: str = typer.Option("table", "--format", "-f", help="table (terminal; plain text with --out), md, csv or latex."),
    metric: str | None = typer.Option(None, "--metric", help="Only this metric (e.g. voc07_map)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Comma-separated datasets, in column order."),
    reference: str | None = typer.Option(None, "--reference", help="Print a paper's published rows beside yours, with deltas (e.g. razavian2014)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the table to this file instead of printing it (every format; `table` as plain text)."
    ),
) -> None:
    """Render the records as a table: rows = backbone + layer, columns = dataset (metric).

    Reads only the records file. --format table (the default) prints a terminal table; md, csv and latex print
    text for a paper. --out writes any of them to a file instead (the terminal table as plain text).

    Examples:
      cnnbase leaderboard --format latex --out table.tex
      cnnbase leaderboard --reference razavian2014 --out table.txt
    """
    from ..errors import ConfigError
    from ..results import build_table, read_records, render

    if format not in FORMATS:
        raise ConfigError(f"unknown --format {format!r}; choose {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")
    ref = _load_reference(reference) if reference else None
    table = build_table(read_records(results), metric=metric, datasets=dataset.split(",") if dataset else None, reference=ref)
    if not table.rows:
        console.print("no records match")
        raise typer.Exit(0)
    if format == "table" and not out:
        console.print(_rich_table(table))
        for n in table.notes:
            console.print(f"[dim]{escape(n)}[/]")
        return
    text = _plain_table(table) if format == "table" else render(table, format)
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {escape(str(out))}", soft_wrap=True, highlight=False)
    else:
        print(text, end="")


FORMATS = ("table", "md", "csv", "latex")


def _rich_table(table) -> Table:  # type: ignore[no-untyped-def]
    """The terminal table; cells are data (dataset names, ``CNN-SVM [razavian2014]``), never Rich markup."""
    t = Table(*(escape(c) for c in table.columns), title="cnnbase leaderboard", header_style="bold")
    for row in table.rows:
        t.add_row(*(escape(c) for c in row))
    return t


def _plain_table(table) -> str:  # type: ignore[no-untyped-def]
    """The terminal table as plain text (no colour, never wrapped) with its notes, for ``--format table --out``."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    c = Console(file=buf, width=100_000, color_system=None, force_terminal=False, highlight=False)
    c.print(_rich_table(table))
    for n in table.notes:
        c.print(n, markup=False)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


def _load_reference(name: str) -> dict:
    from ..config import read_yaml, resource_path
    from ..errors import ConfigError

    p = Path(name)
    if not p.is_file():
        try:
            p = resource_path(f"tasks/reference/{name}.yaml")
        except ConfigError:
            raise ConfigError(f"no reference {name!r}; give a YAML file or a name under tasks/reference/") from None
    data = read_yaml(p)
    if not isinstance(data, dict) or not isinstance(data.get("rows", {}), dict):
        raise ConfigError(f"reference {p}: expected a mapping with rows: {{label: {{dataset: value}}}}")
    # rows are printed; per_class / metrics / baselines / unmatched ride along for callers (build_table ignores them)
    extra = {k: data[k] for k in ("per_class", "metrics", "baselines", "unmatched") if k in data}
    return {"name": data.get("name", name), "rows": data.get("rows", {}), **extra}
