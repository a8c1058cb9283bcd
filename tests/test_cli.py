"""The CLI through Typer's test runner: each command runs, errors are one line with exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnbase.cli import app

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_subprocess_smoke() -> None:
    out = subprocess.run([sys.executable, "-m", "cnnbase", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("extract", "train-svm", "evaluate", "leaderboard", "demo", "models", "features"):
        assert cmd in out.stdout


def test_models_list_and_layers() -> None:
    r = invoke("models", "list", "alex*")
    assert r.exit_code == 0 and "alexnet" in r.stdout and "fc6" in r.stdout
    r = invoke("models", "layers", "tiny_cnn")
    assert r.exit_code == 0 and "classifier.2" in r.stdout and "after ReLU" in r.stdout


def test_extract_list_export(tmp_path: Path, random_folder: Path) -> None:
    store = tmp_path / "store"
    r = invoke("extract", "tiny_cnn", str(random_folder), "--weights", "random", "--store", str(store),
               "--layer", "fc6,fc7", "--workers", "0", "--no-progress")
    assert r.exit_code == 0, r.stdout
    r = invoke("features", "list", "--store", str(store))
    assert r.exit_code == 0 and "tiny_cnn" in r.stdout and "complete" in r.stdout
    from cnnbase.features.store import FeatureStore

    (path, manifest), *_ = FeatureStore(store).manifests()
    out = tmp_path / "f.npz"
    r = invoke("features", "export", manifest["key"][:10], str(out), "--store", str(store))
    assert r.exit_code == 0
    z = np.load(out)
    assert z["features"].shape[0] == len(z["ids"]) == manifest["n"]


def test_domain_error_is_one_line_exit_1(tmp_path: Path) -> None:
    r = runner.invoke(app, ["extract", "alexnet", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert "error:" in r.output and "neither a dataset" in r.output
    assert "Traceback" not in r.output


def test_missing_weights_message(random_folder: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["extract", "alexnet", str(random_folder), "--store", str(tmp_path / "s"), "--no-progress"])
    assert r.exit_code == 1 and "--weights random" in r.output


def test_bad_option_value(random_folder: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["extract", "tiny_cnn", str(random_folder), "--weights", "random", "--jitter", "wobble",
                            "--store", str(tmp_path / "s")])
    assert r.exit_code == 1 and "choose none, flip, razavian or spatial:LEVELS" in r.output


@pytest.mark.parametrize("cmd", ["extract", "train-svm", "evaluate", "leaderboard", "demo"])
def test_every_command_has_teaching_help(cmd: str) -> None:
    r = invoke(cmd, "--help")
    assert r.exit_code == 0 and ("Example" in r.stdout or "demo" == cmd)


def test_rate_column_counts_this_runs_work() -> None:
    """One rate column for images (resumed ones excluded) and for patches (a task field)."""
    from types import SimpleNamespace

    from cnnbase.cli._progress import RateColumn

    task = SimpleNamespace(completed=150, elapsed=2.0, fields={"resumed": 50, "patches": 5000})
    assert RateColumn().render(task).plain == "50.0 img/s"
    assert RateColumn("patches", field="patches", digits=0).render(task).plain == "2,500 patches/s"
    assert RateColumn().render(SimpleNamespace(completed=50, elapsed=2.0, fields={"resumed": 50})).plain == "– img/s"
