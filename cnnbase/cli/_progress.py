"""A Rich progress bar for image work: images done / total, images/s, elapsed and ETA (on stderr)."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ._console import err_console


class RateColumn(ProgressColumn):
    """Items per second over the work done in this run: the task's completed count less its ``resumed`` field (items
    found done), or, with ``field``, that field of the task (e.g. patches, counted apart from the images)."""

    def __init__(self, unit: str = "img", field: str | None = None, digits: int = 1) -> None:
        super().__init__()
        self.unit, self.field, self.digits = unit, field, digits

    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        done = task.fields.get(self.field, 0) if self.field else task.completed - task.fields.get("resumed", 0)
        elapsed = task.elapsed or 0.0
        if done <= 0 or elapsed <= 0:
            return Text(f"– {self.unit}/s", style="progress.data.speed")
        return Text(f"{done / elapsed:,.{self.digits}f} {self.unit}/s", style="progress.data.speed")


class ImageProgress:
    """Context manager; ``advance(n)`` for computed images, ``advance(n, skip=True)`` for ones found done."""

    def __init__(self, description: str, total: int, *, enabled: bool = True) -> None:
        self.description, self.total, self.enabled = description, total, enabled
        self.resumed = 0
        self.start = time.perf_counter()
        self.done = 0

    def __enter__(self) -> ImageProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            self.progress.__enter__()
            # the description holds a dataset name (a folder may be called "s[red]"): text, not markup
            self.task = self.progress.add_task(escape(self.description), total=self.total, resumed=0)
        return self

    def advance(self, n: int, *, skip: bool = False) -> None:
        if skip:
            self.resumed += n
        else:
            self.done += n
        if self.enabled:
            if skip:
                self.progress.update(self.task, resumed=self.resumed)
            self.progress.advance(self.task, n)

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.start, 1e-9)

    def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        if self.enabled:
            self.progress.__exit__(*exc)
