"""Child side of the fault-injection tests: run the real ``cnnbase`` command line with test hooks installed.

Two ways in, same behaviour:

* ``python tests/_robust_child.py extract tiny_cnn FOLDER ...`` with the hooks as JSON in ``CNNBASE_TEST_HOOKS``
  (a plain subprocess, as a user would start it);
* :func:`spawn` — a process forked from a multiprocessing *forkserver* that has torch and cnnbase imported
  already, so each run costs a fork instead of a 5-10 s interpreter start. It is still a separate OS process
  running ``python -m cnnbase``'s entry point with its own signals, exit status and file descriptors.

Hooks (all optional, nothing is added to the CLI):

``shard_size``        samples per shard (the CLI has no option for it)
``log``               append ``<layer> <shard>`` to this file each time a shard write starts
``pause_after``       after this many shard writes have completed, create ``ready`` and sleep ``pause`` seconds
``pause_in_write``    during the n-th (0-based) shard write, after the temporary file is written and fsynced but
                      before it is renamed into place, create ``ready`` and sleep ``pause`` seconds
``sleep_per_shard``   sleep this long after every shard write (to make a run overlap another one)
``ready``             the file created when a pause starts (the parent polls for it, then sends its signal)
``threads``           torch intra-op threads (default 1: on small shared machines spinning threads cost more)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PRELOAD = ["torch", "torchvision", "numpy", "PIL.Image", "cnnbase.runner", "cnnbase.cli", "_robust_child"]


def _touch(path: str | None) -> None:
    if path:
        Path(path).write_text(str(os.getpid()))


def install_hooks(hooks: dict[str, Any]) -> None:
    """Patch this process (only) as ``hooks`` say; see the module docstring."""
    from dataclasses import replace

    import torch

    import cnnbase.runner as runner
    from cnnbase.features import store as store_mod

    torch.set_num_threads(int(hooks.get("threads", 1)))

    if hooks.get("shard_size"):
        real_extract = runner.extract

        def extract(*a, **k):  # type: ignore[no-untyped-def]
            k["opts"] = replace(k.get("opts") or runner.FeatureOptions(), shard_size=int(hooks["shard_size"]))
            return real_extract(*a, **k)

        runner.extract = extract  # the CLI imports it at call time

    pause = float(hooks.get("pause", 120))
    state = {"done": 0, "npy": 0}
    real_write_shard = store_mod.StoreEntry.write_shard

    def write_shard(self, i, array, skipped):  # type: ignore[no-untyped-def]
        if hooks.get("log"):
            fd = os.open(hooks["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{self.fields['layer']} {i}\n".encode())
            finally:
                os.close(fd)
        real_write_shard(self, i, array, skipped)
        state["done"] += 1
        if hooks.get("sleep_per_shard"):
            time.sleep(float(hooks["sleep_per_shard"]))
        if hooks.get("pause_after") is not None and state["done"] == int(hooks["pause_after"]):
            _touch(hooks.get("ready"))
            time.sleep(pause)

    store_mod.StoreEntry.write_shard = write_shard

    if hooks.get("pause_in_write") is not None:
        real_replace = os.replace

        def replace_(src, dst, *a, **k):  # type: ignore[no-untyped-def]
            d = Path(dst)
            if d.parent.name == "shards" and d.suffix == ".npy":
                if state["npy"] == int(hooks["pause_in_write"]):
                    _touch(hooks.get("ready"))
                    time.sleep(pause)
                state["npy"] += 1
            return real_replace(src, dst, *a, **k)

        os.replace = replace_  # store.py calls os.replace(tmp, path)


def run_cli(argv: list[str], env: dict[str, str], out: str, err: str, hooks: dict[str, Any]) -> None:
    """Process target: redirect stdout/stderr to files, set ``env``, install ``hooks``, run ``python -m cnnbase``."""
    import runpy

    for fd, name in ((1, out), (2, err)):
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.environ.update(env)
    install_hooks(hooks)
    sys.argv = ["cnnbase", *argv]
    runpy.run_module("cnnbase", run_name="__main__", alter_sys=False)


def append_records(path: str, tag: str, n: int, sizes: list[int]) -> None:
    """Process target: append ``n`` records of varying size (``sizes`` cycled) to ``path``."""
    from cnnbase.results.records import append_record

    for i in range(n):
        append_record({"run_id": f"{tag}-{i}", "tag": tag, "i": i, "pad": tag * sizes[i % len(sizes)]}, path)


_CTX = None


def context():  # type: ignore[no-untyped-def]
    """The forkserver context, torch and cnnbase preloaded in the server (started on first use)."""
    global _CTX
    if _CTX is None:
        import multiprocessing

        here = str(Path(__file__).parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


class Child:
    """One ``cnnbase`` run in its own process; ``stdout``/``stderr`` are read from files after it ends."""

    def __init__(self, argv: list[str], workdir: Path, name: str, hooks: dict[str, Any] | None = None) -> None:
        self.out, self.err = workdir / f"{name}.out", workdir / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if k.startswith(("CNNBASE_", "TORCH_HOME", "COLUMNS"))}
        env["PYTHONHASHSEED"] = "0"
        self.proc = context().Process(target=run_cli, args=(argv, env, str(self.out), str(self.err), hooks or {}))
        self.proc.start()

    @property
    def pid(self) -> int:
        return self.proc.pid  # type: ignore[return-value]

    def wait(self, timeout: float = 120) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(10)
            raise TimeoutError(f"child {self.pid} did not finish in {timeout} s; stderr: {self.stderr}")
        return self.proc.exitcode

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


def wait_for(path: Path, child: Child, timeout: float = 120) -> None:
    """Poll until ``path`` exists (the child reached its pause); fail early if the child ended instead."""
    t0 = time.monotonic()
    while not path.exists():
        if not child.proc.is_alive():
            raise AssertionError(f"child ended (exit {child.proc.exitcode}) before pausing; stderr: {child.stderr}")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"child never reached its pause ({path}); stderr: {child.stderr}")
        time.sleep(0.02)


if __name__ == "__main__":  # plain-subprocess entry: hooks from the environment, argv as for `python -m cnnbase`
    install_hooks(json.loads(os.environ.get("CNNBASE_TEST_HOOKS", "{}")))
    from cnnbase.cli import main

    sys.argv = ["cnnbase", *sys.argv[1:]]
    main()
