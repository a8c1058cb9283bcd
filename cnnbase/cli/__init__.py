"""The ``cnnbase`` command line: a thin layer over the library (options in, one stage or the runner called, results printed).

Precedence for every setting: command-line option > protocol card (``tasks/*.yaml``) > ``datasets.yaml`` > default.
Domain errors (:class:`cnnbase.errors.CnnbaseError`) and file-system errors (:class:`OSError`: a read-only or full
disk, a path under a regular file, missing permissions) become one red line and exit status 1 here, at the boundary;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import os

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import CnnbaseError
from ._console import console, err_console

_state = {"debug": False}


class _Group(TyperGroup):
    """The root group: the one place where domain and file-system errors become a one-line message and exit status 1."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        argv = [*getattr(ctx, "_protected_args", []), *ctx.args]  # the command's own arguments, to name the option at fault
        flags = _flag_names(self, ctx, argv)
        try:
            return super().invoke(ctx)
        except CnnbaseError as exc:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            if _state["debug"] or exc.errno == errno.EPIPE:  # a closed pipe (`| head`): click exits quietly
                raise
            err_console.print(f"[bold red]error:[/] {escape(os_error_line(exc, argv, flags))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is kept; rerun the same command to resume")
            raise typer.Exit(130) from None


# errnos that only a write (or a folder being created) gives; ENOENT is a missing input
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EEXIST, errno.ENOTDIR, errno.EXDEV, errno.EFBIG}


def os_error_line(exc: OSError, argv: list[str] | tuple[str, ...] = (), flags: set[str] | frozenset[str] = frozenset()) -> str:
    """One line for a file-system error: ``cannot write PATH: Read-only file system; choose a writable --store, or
    fix its permissions``. The option is named when PATH lies under a path given on the command line (``argv``;
    ``flags`` are the options there that take no value)."""
    path = exc.filename
    reason = exc.strerror or type(exc).__name__
    if path is None:  # not about one path: say what it is, and where to see more
        return f"{type(exc).__name__}: {' '.join(str(exc).split())} (`cnnbase --debug ...` shows where it happened)"
    path = os.fsdecode(path)
    if exc.errno == errno.ENOENT:
        verb = "read"
    elif exc.errno in _WRITE_ERRNOS:
        verb = "write"
    elif os.path.exists(path) and not os.access(path, os.R_OK):
        verb = "read"
    else:
        verb = "write"
    if exc.errno == errno.ENOTDIR:
        reason += " (a part of the path is a regular file)"
    elif exc.errno == errno.EEXIST:
        reason += " (a regular file is in the way of a folder)"
    elif exc.errno == errno.EISDIR:
        reason += " (give a file name, not a folder)"
    option = _option_for(path, argv, flags)
    if verb == "read":
        fix = f"check {option or 'the path'} and its permissions"
    elif option and option.startswith("-"):
        fix = f"choose a writable {option}, or fix its permissions"
    elif option:
        fix = "choose a writable output path, or fix its permissions"
    else:
        fix = "fix its permissions or free space there, or point the command elsewhere (--store, --out, --results)"
    return f"cannot {verb} {path}: {reason}; {fix}"


def _option_for(path: str, argv: list[str] | tuple[str, ...], flags: set[str] | frozenset[str]) -> str | None:
    """The option (``--store``) whose value is ``path``, lies above it, or (a folder in the way) below it;
    ``"output"`` for a positional path; None when no path on the command line is related to ``path``."""

    def norm(p: str) -> str:
        return os.path.abspath(os.path.expanduser(p))

    def under(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip(os.sep) + os.sep)

    target = norm(path)
    best: tuple[int, str] | None = None
    for i, tok in enumerate(argv):
        name, value = None, tok
        if tok.startswith("--") and "=" in tok:
            name, value = tok.split("=", 1)
        elif i and argv[i - 1].startswith("-") and "=" not in argv[i - 1] and argv[i - 1] not in flags:
            name = argv[i - 1]
        if not value or value.startswith("-"):
            continue
        given = norm(value)
        # the error is in the given path (rank by closeness), or on a folder it needs (e.g. a file in its way)
        rank = len(given) if under(target, given) else (-len(given) if under(given, target) and target != os.sep else None)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, name or "output")
    return best[1] if best else None


def _flag_names(group, ctx, argv: list[str]) -> set[str]:  # type: ignore[no-untyped-def]
    """Every spelling of an option that takes no value (``--no-progress``) on the way to the command ``argv`` runs."""
    names: set[str] = set()
    cmd = group
    for tok in (None, *argv):
        if tok is not None:
            if tok.startswith("-") or not hasattr(cmd, "get_command"):
                continue
            sub = cmd.get_command(ctx, tok)
            if sub is None:
                break
            cmd = sub
        for p in getattr(cmd, "params", ()):
            if getattr(p, "is_flag", False) or getattr(p, "count", False):
                names.update(p.opts, p.secondary_opts)
    return names


app = typer.Typer(
    name="cnnbase",
    cls=_Group,
    help="How well do a network's off-the-shelf features transfer? Extract, train linear SVMs, evaluate with "
    "each benchmark's official metric, and tabulate (Razavian et al. 2014, Oquab et al. 2014).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        console.print(f"cnnbase {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print cnnbase's version and exit."),
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


def _reflow(doc: str) -> str:
    """A docstring as ``--help`` should show it: prose paragraphs on one line each (Rich rewraps them to the
    terminal), while paragraphs of examples or lists (a heading ending in ':' or indented lines) keep their lines."""
    out = []
    for par in inspect.cleandoc(doc).split("\n\n"):
        lines = par.split("\n")
        keep = len(lines) > 1 and (lines[0].rstrip().endswith(":") or any(ln.startswith(" ") for ln in lines[1:]))
        out.append(par if keep else " ".join(ln.strip() for ln in lines))
    return "\n\n".join(out)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Give every command of ``typer_app`` (and of its sub-apps) its docstring reflowed as its help text: Typer's Rich
    help keeps a docstring's line breaks, which would break sentences mid-line on any terminal width."""
    for cmd in typer_app.registered_commands:
        if cmd.help is None and cmd.callback is not None and cmd.callback.__doc__:
            cmd.help = _reflow(cmd.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def main() -> None:
    """Console-script entry point. SIGTERM (a scheduler's kill) is handled like Ctrl-C: writes in flight are cleaned
    up and the resume hint is printed (exit 130)."""
    import signal

    def _term(signum, frame):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    app()


__all__ = ["app", "console", "main"]
