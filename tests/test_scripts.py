"""The extraction benchmarks still run end to end (tiny network, a few generated images): they print the figures the
docs quote, so a change that breaks them must fail here, not at the next measurement."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run(tmp_path: Path, script: str, *args: str) -> str:
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}  # generated sets and caches under tmp_path
    out = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(not (SCRIPTS / "bench_extract.py").is_file(), reason="scripts/ not in this checkout")
def test_bench_extract_prints_every_figure(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_extract.py", "--model", "tiny_cnn", "--generate", "24", "--plain-limit", "8",
               "--repeats", "1", "--rounds", "2")
    assert len(re.findall(r"round \d: \(a\) [\d.]+ img/s", out)) == 2
    for figure in (r"\(a\) plain torchvision loop +[\d.]+ img/s", r"\(b\) cnnbase extract, end to end +[\d.]+ img/s",
                   r"\(c\) model alone", r"\(d\) decode \+ preprocess", r"b/a = [\d.]+x", r"b/L = [\d.]+",
                   r"\(e\) [\d.]+ GFLOP per image; .* [\d.]+ GFLOP/s -> at most [\d.]+ img/s", r"exceeds b/a = [\d.]+x"):
        assert re.search(figure, out), (figure, out)


@pytest.mark.skipif(not (SCRIPTS / "bench_extract.py").is_file(), reason="scripts/ not in this checkout")
def test_bench_extract_with_a_forced_precision_has_no_probe(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_extract.py", "--model", "tiny_cnn", "--generate", "12", "--plain-limit", "4",
               "--repeats", "1", "--precision", "fp32", "--compile", "off")
    assert re.search(r"\(b\) .*precision fp32, compile False, probe none", out), out
    assert re.search(r"\(c\) model alone \(fp32\)", out), out


@pytest.mark.skipif(not (SCRIPTS / "bench_precision.py").is_file(), reason="scripts/ not in this checkout")
def test_bench_precision_prints_probe_and_score_changes(tmp_path: Path) -> None:
    out = _run(tmp_path, "bench_precision.py", "--model", "tiny_cnn", "--train-per-class", "3", "--test-per-class", "4")
    assert "27 train / 36 test images" in out
    row = re.search(r"^ +0\.00 +bf16 \| +([\d.]+) +[\d.]+% +[\d.]+ +[\d.]+ +(pass|fail) \|", out, re.M)
    assert row and 0.9 < float(row.group(1)) <= 1.0, out
    assert "target: |Δ| ≤ 0.2 points wherever the probe passes" in out
