"""The CLI through Typer's test runner: each command runs, errors are one line with exit status 1."""

from __future__ import annotations

import os
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


# -- file-system errors, markup, formats, option bounds and help texts (audit fixes) ---------------------------

FAST = ["--weights", "random", "--workers", "0", "--no-progress", "--precision", "fp32"]
RECORD = '{"run_id": "a", "dataset": "s[red]", "metric": "accuracy", "value": 0.5, "backbone": "tiny_cnn", "layer": "fc6", "weights": "random"}\n'


def error_line(output: str) -> str:
    """The one non-empty line of a failed command's output, which must be an ``error:`` line without a traceback."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    return lines[0]


@pytest.mark.parametrize("cmd", ["demo", "leaderboard", "export"])
def test_unwritable_output_path_is_one_line(cmd: str, tmp_path: Path) -> None:
    """A path under a regular file (NotADirectoryError or FileExistsError, OSErrors; what a read-only folder gives
    too, but root ignores permissions): one line naming the path and the option to change, exit status 1."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    records = tmp_path / "records.jsonl"
    records.write_text(RECORD)
    argv, fix = {
        "demo": (["demo", "--out", str(blocker / "demo"), "--no-progress"], "choose a writable --out"),
        "leaderboard": (["leaderboard", "--results", str(records), "-f", "csv", "--out", str(blocker / "t.csv")], "choose a writable --out"),
        "export": (["features", "export", "abcdef", str(blocker / "x.npz")], None),
    }[cmd]
    if cmd == "export":  # an entry to export first
        from _images import write_images

        write_images(tmp_path / "imgs", {"a": 2}, size=32)
        store = tmp_path / "s"
        assert invoke("extract", "tiny_cnn", str(tmp_path / "imgs"), *FAST, "--store", str(store), "--split", "all").exit_code == 0
        from cnnbase.features.store import FeatureStore

        argv[2] = FeatureStore(store).manifests()[0][1]["key"][:8]
        argv += ["--store", str(store)]
        fix = "choose a writable output path"
    r = runner.invoke(app, argv)
    assert r.exit_code == 1
    line = error_line(r.output)
    assert line.startswith(f"error: cannot write {blocker}") and fix in line
    assert ("File exists" if cmd == "export" else "Not a directory") in line


def test_store_under_a_file_is_one_line(tmp_path: Path, random_folder: Path) -> None:
    """extract --store under a regular file: the precision probe's cache (where --precision auto probes) or the
    store's manifest read fails first, depending on the CPU; either way one line naming the path."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    r = runner.invoke(app, ["extract", "tiny_cnn", str(random_folder), "-w", "random", "--workers", "0", "--no-progress",
                            "--store", str(blocker / "s")])  # fmt: skip
    assert r.exit_code == 1
    line = error_line(r.output)
    assert str(blocker / "s") in line
    if line.startswith("error: cannot write"):
        assert "choose a writable --store" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_store_is_one_line(tmp_path: Path, random_folder: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = runner.invoke(app, ["extract", "tiny_cnn", str(random_folder), *FAST, "--store", str(ro / "s")])
    finally:
        ro.chmod(0o755)
    assert r.exit_code == 1
    line = error_line(r.output)
    assert f"cannot write {ro / 's'}" in line and "Permission denied" in line and "choose a writable --store" in line


def test_os_error_line() -> None:
    """Read or write, the reason, and the option whose path is at fault (a flag's neighbour is not its value)."""
    import errno

    from cnnbase.cli import os_error_line

    argv = ["extract", "alexnet", "imgs", "--store", "/ro/s", "--no-progress", "/ro/x"]
    exc = OSError(errno.EROFS, "Read-only file system", "/ro/s/_probes")
    assert os_error_line(exc, argv) == "cannot write /ro/s/_probes: Read-only file system; choose a writable --store, or fix its permissions"
    line = os_error_line(OSError(errno.EROFS, "Read-only file system", "/ro/x/y"), argv, {"--no-progress"})
    assert "choose a writable output path" in line
    assert os_error_line(OSError(errno.ENOENT, "No such file or directory", "/gone"), []).startswith("cannot read /gone: No such file")
    assert os_error_line(PermissionError(errno.EACCES, "Permission denied", "/nonexistent/ro/t.csv"), ["-o", "/nonexistent/ro/t.csv"]) == (
        "cannot write /nonexistent/ro/t.csv: Permission denied; choose a writable -o, or fix its permissions"
    )
    assert os_error_line(FileExistsError(errno.EEXIST, "File exists", "/ro"), ["export", "k", "/ro/x.npz"]).startswith(
        "cannot write /ro: File exists (a regular file is in the way of a folder); choose a writable output path"
    )


def test_os_error_with_debug_shows_the_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    records = tmp_path / "records.jsonl"
    records.write_text(RECORD)
    r = runner.invoke(app, ["--debug", "leaderboard", "--results", str(records), "--out", str(blocker / "t.txt")])
    assert isinstance(r.exception, NotADirectoryError)


def test_square_brackets_in_data_are_printed(tmp_path: Path) -> None:
    """A dataset folder named s[red] and the reference rows' '[razavian2014]' are text, never Rich markup."""
    from _images import write_images

    data = tmp_path / "s[red]"
    write_images(data, {"a": 5, "b": 5}, size=32)
    store, records = tmp_path / "store", tmp_path / "records.jsonl"
    r = invoke("evaluate", "tiny_cnn", str(data), *FAST, "--store", str(store), "--results", str(records), "--C", "1")
    assert r.exit_code == 0 and r.stdout.startswith("s[red] classification"), r.stdout
    r = invoke("features", "list", "--store", str(store))
    assert r.stdout.count("s[red]") == 2  # train and test rows
    r = invoke("leaderboard", "--results", str(records), "--reference", "razavian2014")
    assert "CNN-SVM [razavian2014]" in r.stdout and "s[red] (accuracy)" in r.stdout


def test_leaderboard_formats_and_out(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text(RECORD)
    r = runner.invoke(app, ["leaderboard", "--results", str(records), "-f", "html"])
    assert r.exit_code == 1
    assert error_line(r.output) == "error: unknown --format 'html'; choose table, md, csv or latex"
    out = tmp_path / "t.txt"
    r = invoke("leaderboard", "--results", str(records), "--out", str(out))
    assert r.exit_code == 0 and r.stdout.strip() == f"wrote {out}"
    text = out.read_text(encoding="utf-8")
    assert "tiny_cnn fc6†" in text and "s[red] (accuracy)" in text and "† random weights" in text and "\x1b" not in text


def test_features_list_keeps_the_key_and_export_names_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80 columns the key column shows the 12 characters (export needs 6), not 'abcde…'; export prints the
    files it really wrote (numpy adds .npy)."""
    from _images import write_images

    from cnnbase.features.store import FeatureStore

    data = tmp_path / "a_rather_long_dataset_folder_name"
    write_images(data, {"a": 2, "b": 2}, size=32)
    store = tmp_path / "store"
    assert invoke("extract", "tiny_cnn", str(data), *FAST, "--store", str(store), "--split", "all").exit_code == 0
    (_, manifest), = FeatureStore(store).manifests()
    monkeypatch.setenv("COLUMNS", "80")
    r = invoke("features", "list", "--store", str(store))
    assert manifest["key"][:12] in r.stdout and "…" not in r.stdout
    r = invoke("features", "export", manifest["key"][:6], str(tmp_path / "out.txt"), "--store", str(store))
    assert r.exit_code == 0 and f"wrote {tmp_path / 'out.txt.npy'} and {tmp_path / 'out.txt.ids.txt'}" in r.stdout
    assert np.load(tmp_path / "out.txt.npy").shape[0] == 4 and len((tmp_path / "out.txt.ids.txt").read_text().split("\n")) == 5


def test_features_list_missing_store(tmp_path: Path) -> None:
    r = runner.invoke(app, ["features", "list", "--store", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "does not exist" in error_line(r.output)


def test_demo_needs_two_images_per_class(tmp_path: Path) -> None:
    from cnnbase.demo_data import make_texture_dataset
    from cnnbase.errors import ConfigError

    for n in ("0", "1"):
        r = runner.invoke(app, ["demo", "--per-class", n, "--out", str(tmp_path / "d"), "--no-progress"])
        assert r.exit_code == 2 and "--per-class" in r.output and "ValueError" not in r.output
    with pytest.raises(ConfigError, match="per_class 2 or more"):
        make_texture_dataset(tmp_path / "t", per_class=1, test_per_class=1)


@pytest.mark.parametrize("layer", ["", " , "])
def test_empty_layer_is_refused(layer: str, random_folder: Path, tmp_path: Path) -> None:
    for cmd in ("extract", "train-svm"):
        r = runner.invoke(app, [cmd, "tiny_cnn", str(random_folder), *FAST, "--store", str(tmp_path / "s"), "--layer", layer])
        assert r.exit_code == 1 and error_line(r.output).startswith(f"error: empty --layer {layer!r}")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "argv, option",
    [
        (["extract", "--batch-size", "0"], "--batch-size"),
        (["extract", "-b", "-3"], "--batch-size"),
        (["extract", "--workers", "-1"], "--workers"),
        (["transfer", "train", "--workers", "-1"], "--workers"),
        (["transfer", "train", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_counts_out_of_range_are_usage_errors(argv: list[str], option: str, random_folder: Path, tmp_path: Path) -> None:
    cmd, opts = (argv[:2], argv[2:]) if argv[0] == "transfer" else (argv[:1], argv[1:])
    r = runner.invoke(app, [*cmd, "tiny_cnn", str(random_folder), "-w", "random", "--store", str(tmp_path / "s"), *opts])
    assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output


def test_version_and_models_without_a_match() -> None:
    from cnnbase import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"cnnbase {__version__}"
    r = runner.invoke(app, ["models", "list", "zzz*"])
    assert r.exit_code == 1 and error_line(r.output) == "error: no model matches 'zzz*'; see `cnnbase models list` for every name"


def test_help_texts_say_what_the_code_does() -> None:
    """Docstring paragraphs are reflowed (no sentence broken mid-line), option texts match the behaviour."""
    extract_help = invoke("extract", "--help").stdout
    assert "The store key covers everything that changes the numbers" in extract_help
    run_help = invoke("run", "--help").stdout
    assert "only when the eager model" not in run_help and "off unless given" in run_help
    svm_help = invoke("train-svm", "--help").stdout
    assert "the pooled vector `pool` for ResNet" in svm_help and "$CNNBASE_DATASETS" in svm_help
    assert "at evaluation time" not in svm_help and "for SVM training and testing alike" in svm_help
    assert "attributes" in invoke("evaluate", "--help").stdout
    assert "image folder" not in invoke("datasets", "download", "--help").stdout
    assert "adapter" in invoke("datasets", "list").stdout


def test_datasets_yaml_encoding_and_syntax_errors(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"datasets:\n  f\xe9\xff: 1\n")
    r = runner.invoke(app, ["datasets", "list", "--datasets", str(binary)])
    assert r.exit_code == 1 and error_line(r.output) == f"error: cannot read {binary}: not UTF-8 text (byte 0xe9 at offset 13); save it as UTF-8"
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  foo: {adapter: x\n  bar: [1,2\n")
    r = runner.invoke(app, ["datasets", "list", "--datasets", str(bad)])
    assert r.exit_code == 1
    assert error_line(r.output) == (
        f"error: {bad}: bad YAML at line 3, column 6: expected ',' or '}}', but got ':' "
        "(while parsing a flow mapping started at line 2, column 8); fix the syntax there"
    )


def test_train_svm_says_which_c_was_chosen(texture_set: Path, tmp_path: Path) -> None:
    r = invoke("train-svm", "tiny_cnn", str(texture_set), *FAST, "--store", str(tmp_path / "s"), "--C", "0.1,1", "--folds", "2")
    assert r.exit_code == 0 and "by 2-fold CV from the grid 0.1, 1:" in r.stdout and "chosen C " in r.stdout
    r = invoke("train-svm", "tiny_cnn", str(texture_set), *FAST, "--store", str(tmp_path / "s"), "--C", "0.2")
    assert "C = 0.2 (fixed, no CV)" in r.stdout


def test_run_with_no_dataset_present_fails(tmp_path: Path) -> None:
    """A card run where every dataset is absent (this test's empty home) is exit 1, not a silent success."""
    r = runner.invoke(app, ["run", "razavian2014", "-m", "tiny_cnn", "-w", "random", "--no-progress",
                            "--store", str(tmp_path / "s"), "--results", str(tmp_path / "r.jsonl")])  # fmt: skip
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: nothing was run: no dataset of the card is present")
    assert any(ln.startswith("skipped voc2007") for ln in lines) and "Traceback" not in r.output
