"""The ``cnnbase`` command line: a thin layer over the library (options in, one stage or the runner called, results printed).

Precedence for every setting: command-line option > protocol card (``tasks/*.yaml``) > ``datasets.yaml`` > default.
Domain errors (:class:`cnnbase.errors.CnnbaseError`) become one red line and exit status 1 here, at the boundary;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import CnnbaseError
from ._console import console, err_console

_state = {"debug": False}


class _Group(TyperGroup):
    """The root group: the one place where domain errors become a one-line message and exit status 1."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except CnnbaseError as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is kept; rerun the same command to resume")
            raise typer.Exit(130) from None


app = typer.Typer(
    name="cnnbase",
    cls=_Group,
    help="How well do a network's off-the-shelf features transfer? Extract, train linear SVMs, evaluate with "
    "each benchmark's official metric, and tabulate (Razavian et al. 2014, Oquab et al. 2014).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug


# One module per command group; each registers its commands on `app` when imported.
_COMMAND_MODULES = ("extract", "svm", "evaluate", "leaderboard", "models", "features", "datasets", "run", "demo", "transfer")
for _mod in _COMMAND_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_mod}":
            raise


def main() -> None:
    """Console-script entry point. SIGTERM (a scheduler's kill) is handled like Ctrl-C: writes in flight are cleaned
    up and the resume hint is printed (exit 130)."""
    import signal

    def _term(signum, frame):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    app()


__all__ = ["app", "console", "main"]
