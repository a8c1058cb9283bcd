"""Records → the table a user pastes into a paper (rows: backbone + layer; columns: dataset and metric).

The leaderboard reads records only. When several records fill the same cell, the newest wins. Values are
shown in the metric's display scale (percent for AP/accuracy; UKBench's N-S score as is). Row markers:
``†`` random weights, ``*n`` deviates from its protocol card (a row of its own per set of deviations, footnote n
lists them), ``‡`` some images were skipped as bad.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """A rendered-agnostic table: header cells, rows of cells, and footnotes."""

    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    row_keys: list[tuple] = field(default_factory=list)


def _scale(metric: str) -> float:
    try:
        from ..metrics import METRICS

        return float(METRICS.get(metric).scale)
    except Exception:
        return 100.0


def _fmt(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    s = _scale(metric)
    return f"{value * s:.1f}" if s == 100 else f"{value * s:.3f}"


def _deviations(r: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted((r.get("card") or {}).get("deviations") or ()))


def row_key(r: dict[str, Any]) -> tuple:
    """A row per model, layer and label, and per set of deviations from the card: a run that deviates never
    replaces the protocol's row (nor one that deviates otherwise)."""
    return (r.get("backbone"), r.get("weights"), r.get("layer"), r.get("label", ""), _deviations(r))


def row_label(r: dict[str, Any]) -> str:
    label = f"{r.get('backbone')} {r.get('layer')}"
    if r.get("label"):
        label += f" ({r['label']})"
    marks = ""
    if str(r.get("weights", "")).startswith("random"):
        marks += "†"
    if (r.get("card") or {}).get("deviations"):
        marks += "*"
    if r.get("n_skipped"):
        marks += "‡"
    return label + marks


def build_table(
    records: list[dict[str, Any]],
    *,
    metric: str | None = None,
    datasets: list[str] | None = None,
    reference: dict[str, Any] | None = None,
) -> Table:
    """Collect the newest value per (row, dataset, metric) cell.

    Args:
        records: as read by :func:`cnnbase.results.read_records`.
        metric: keep only this metric (default: every record's headline metric).
        datasets: keep only these datasets, in this column order.
        reference: published rows, ``{"name": ..., "rows": {label: {dataset: value_in_display_units}}}``;
            they are printed first and each user row gets a Δ against the first reference row per dataset.
    """
    recs = [r for r in records if (metric is None or r.get("metric") == metric)]
    if datasets:
        recs = [r for r in recs if r.get("dataset") in datasets]
    cols: list[tuple[str, str]] = []
    for r in recs:
        c = (r.get("dataset"), r.get("metric"))
        if c not in cols:
            cols.append(c)
    if datasets:
        cols.sort(key=lambda c: datasets.index(c[0]))
    cells: dict[tuple, dict[tuple, dict[str, Any]]] = {}
    labels: dict[tuple, str] = {}
    numbered: dict[tuple[str, ...], int] = {}  # each set of deviations: its footnote number
    for r in sorted(recs, key=lambda r: r.get("time", "")):
        k = row_key(r)
        cells.setdefault(k, {})[(r.get("dataset"), r.get("metric"))] = r
        labels[k] = row_label(r)
        if devs := _deviations(r):
            labels[k] = labels[k].replace("*", f"*{numbered.setdefault(devs, len(numbered) + 1)}", 1)
    header = ["model"] + [f"{d} ({m})" for d, m in cols]
    rows: list[list[str]] = []
    ref_rows: dict[str, dict[str, Any]] = dict(reference.get("rows", {})) if reference else {}
    for label, vals in ref_rows.items():
        rows.append([f"{label} [{reference.get('name', 'ref')}]"] + [_ref_cell(vals.get(d), m) for d, m in cols])  # type: ignore[union-attr]
    for k, by_col in cells.items():
        row = [labels[k]]
        for d, m in cols:
            r = by_col.get((d, m))
            cell = _fmt(r.get("value") if r else None, m)
            ref = _reference_value(ref_rows, r.get("label", "") if r else "", d)
            if r and ref is not None and r.get("value") is not None:
                cell += f" ({r['value'] * _scale(m) - ref:+.{1 if _scale(m) == 100 else 3}f})"
            row.append(cell)
        rows.append(row)
    notes = []
    flat = "".join(row[0] for row in rows)
    if "†" in flat:
        notes.append("† random weights (not a pretrained network)")
    for devs, n in numbered.items():
        notes.append(f"*{n} deviates from its protocol card (not comparable with the reference rows): {'; '.join(devs)}")
    if "‡" in flat:
        notes.append("‡ some images were skipped as unreadable (see the records)")
    return Table(columns=header, rows=rows, notes=notes, row_keys=list(cells))


def _reference_value(ref_rows: dict[str, dict[str, Any]], label: str, dataset: str) -> float | None:
    """The published value a user row is compared with: the reference row of the same variant (label), else the
    first reference row that has this dataset."""
    if label in ref_rows and ref_rows[label].get(dataset) is not None:
        return float(ref_rows[label][dataset])
    for vals in ref_rows.values():
        if vals.get(dataset) is not None:
            return float(vals[dataset])
    return None


def _ref_cell(v: Any, metric: str) -> str:
    if v is None:
        return "–"
    return f"{float(v):.1f}" if _scale(metric) == 100 else f"{float(v):.3f}"


def render(table: Table, fmt: str = "md") -> str:
    """Markdown, CSV or LaTeX text of ``table`` (the terminal view uses Rich in the CLI)."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(table.columns)
        w.writerows(table.rows)
        return buf.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(table.columns) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in table.rows]
        return "\n".join(lines + ([""] + table.notes if table.notes else [])) + "\n"
    if fmt == "latex":
        esc = _latex_escape
        lines = [
            r"\begin{tabular}{l" + "r" * (len(table.columns) - 1) + "}",
            r"\toprule",
            " & ".join(esc(c) for c in table.columns) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in table.rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {n}" for n in table.notes]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose md, csv or latex")


def _latex_escape(s: str) -> str:
    repl = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "–": "--", "Δ": r"$\Delta$"}
    return "".join(repl.get(ch, ch) for ch in s)
