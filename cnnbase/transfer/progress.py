"""Rich progress bars for the transfer stages (on stderr): patch extraction and head training."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    """Shared context-manager plumbing; a disabled bar does nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task: Any = None

    def _start(self, *columns: Any, description: str, total: float, **fields: Any) -> None:
        if not self.enabled:
            return
        from ..cli._console import err_console

        self.progress = Progress(*columns, console=err_console, transient=False)
        self.progress.__enter__()
        from rich.markup import escape

        # descriptions hold dataset names (a folder may be called "s[red]"): text, not markup
        self.task = self.progress.add_task(escape(description), total=total, **fields)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


class ExtractProgress(_Bar):
    """Images done / total, patches per second, elapsed, ETA."""

    def __init__(self, description: str, total: int, *, enabled: bool = True) -> None:
        super().__init__(enabled)
        self.description, self.total = description, total
        self.patches = 0
        self.start = time.perf_counter()

    def __enter__(self) -> ExtractProgress:
        from ..cli._progress import RateColumn

        self._start(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("images"),
            RateColumn("patches", field="patches", digits=0),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            description=self.description,
            total=self.total,
            patches=0,
        )
        return self

    def advance(self, images: int, patches: int = 0, *, skip: bool = False) -> None:
        if not skip:
            self.patches += patches
        if self.progress is not None:
            self.progress.update(self.task, advance=images, patches=self.patches)


class TrainProgress(_Bar):
    """Steps of the current epoch, with epoch number, learning rate, running loss, elapsed and ETA of the epoch."""

    def __init__(self, description: str, *, enabled: bool = True) -> None:
        super().__init__(enabled)
        self.description = description

    def __enter__(self) -> TrainProgress:
        self._start(
            TextColumn("[bold]{task.description}"),
            TextColumn("epoch {task.fields[epoch]} · plateaus {task.fields[plateaus]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("lr {task.fields[lr]}  loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            description=self.description,
            total=1,
            epoch="-",
            plateaus="-",
            lr="-",
            loss="-",
        )
        return self

    def epoch(self, epoch: int, steps: int, lr: float, plateaus: str = "-") -> None:
        if self.progress is not None:
            self.progress.reset(self.task, total=steps, epoch=epoch, plateaus=plateaus, lr=f"{lr:g}", loss="-")

    def step(self, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{loss:.4f}")

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
