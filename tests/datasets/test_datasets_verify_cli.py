"""``cnnbase datasets list | verify | download`` and the datasets.yaml schema (STYLE 7: pinned dataset facts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnnbase.cli import app
from cnnbase.config import load_dataset_configs, resource_path
from cnnbase.datasets import ADAPTERS, open_dataset
from cnnbase.datasets.base import TASKS
from cnnbase.datasets.download import file_specs
from cnnbase.datasets.verify import locate, verify

runner = CliRunner()
from cnnbase.metrics import METRICS  # noqa: E402  (every datasets.yaml metric must be a registered one)

BENCHMARKS = {
    "voc2007", "voc2012", "mit67", "cub200", "flowers102", "apascal", "ayahoo", "h3d", "oxford5k", "paris6k",
    "roxford5k", "rparis6k", "holidays", "holidays_rotated", "ukbench",
}  # fmt: skip


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


# ---------------------------------------------------------------------------------------- datasets.yaml schema


def test_datasets_yaml_schema() -> None:
    configs = load_dataset_configs(resource_path("datasets.yaml"))
    raw = yaml.safe_load(resource_path("datasets.yaml").read_text())["datasets"]
    assert BENCHMARKS <= set(configs)
    for name in BENCHMARKS:
        cfg = configs[name]
        assert cfg.adapter in ADAPTERS, name
        assert cfg.task in TASKS and cfg.metric in METRICS, name
        assert not Path(raw[name]["root"]).is_absolute(), f"{name}: roots are relative to $CNNBASE_DATA"
        pub = cfg.published
        assert set(pub) <= {"splits", "classes", "attributes", "queries", "objects"}, name
        if cfg.task == "retrieval":
            assert (cfg.train_split, cfg.test_split) == ("query", "database"), name
        if name != "h3d":
            assert cfg.train_split in pub["splits"] and cfg.test_split in pub["splits"], name
        assert cfg.download.get("instructions"), f"{name}: every entry says how to get it by hand"
        file_specs(cfg)  # every download entry is valid
    assert (configs["voc2007"].train_split, configs["voc2007"].test_split) == ("trainval", "test")
    assert (configs["voc2012"].train_split, configs["voc2012"].test_split) == ("train", "val")
    assert (configs["flowers102"].train_split, configs["flowers102"].test_split) == ("trainval", "test")
    assert configs["holidays"].options["rotated"] is False and configs["holidays_rotated"].options["rotated"] is True


# ----------------------------------------------------------------------------------------------------- verify


@pytest.fixture
def fake_yaml(tmp_path: Path, fake, yaml_file):  # type: ignore[no-untyped-def]
    """A datasets.yaml whose roots are fake layouts (copying the published counts of the fakes)."""
    fake.make_voc(tmp_path / "voc", images=False)
    fake.make_oxford(tmp_path / "ox", images=False)
    fake.make_holidays(tmp_path / "hol")
    return yaml_file(
        {
            "voc2007": {
                "adapter": "voc", "task": "multilabel", "root": str(tmp_path / "voc"), "metric": "voc07_map",
                "options": {"year": 2007}, "published": {"splits": {"trainval": 5, "test": 3}, "classes": 20},
                "download": {"instructions": "get ROOT"},
            },
            "wrong": {
                "adapter": "voc", "task": "multilabel", "root": str(tmp_path / "voc"), "metric": "voc07_map",
                "published": {"splits": {"trainval": 5011, "test": 4952}, "classes": 20},
            },
            "oxford5k": {
                "adapter": "oxford_paris", "task": "retrieval", "root": str(tmp_path / "ox"), "metric": "oxford_map",
                "published": {"splits": {"query": 2, "database": 5063}, "queries": 2},
            },
            "holidays": {
                "adapter": "holidays", "task": "retrieval", "root": str(tmp_path / "hol"), "metric": "holidays_map",
                "published": {"splits": {"query": 2, "database": 5}, "queries": 2},
                "download": {"instructions": "ask INRIA; put it in ROOT"},
            },
            "absent": {"adapter": "mit67", "task": "classification", "root": str(tmp_path / "nowhere"), "metric": "accuracy"},
        }
    )  # fmt: skip


def test_verify_counts_with_images_absent(fake_yaml: Path) -> None:
    rep = verify("voc2007", datasets=fake_yaml)
    assert rep.ok and rep.readable
    rows = {c.what: c for c in rep.splits}
    assert (rows["test"].found, rows["test"].missing_images, rows["test"].status) == (3, 3, "ok")
    assert rows["train"].status == "unpublished"
    assert {c.what: c.status for c in rep.counts} == {"classes": "ok", "objects (XML)": "unpublished"}
    bad = verify("wrong", datasets=fake_yaml)
    assert not bad.ok and {c.what: c.status for c in bad.splits}["trainval"] == "mismatch"


def test_verify_retrieval_database_unknown_without_images(fake_yaml: Path) -> None:
    rep = verify("oxford5k", datasets=fake_yaml)
    rows = {c.what: c.status for c in rep.splits}
    assert rows == {"query": "ok", "database": "unknown"} and rep.ok
    assert "image folder" in rep.notes[0]
    hol = verify("holidays", datasets=fake_yaml)
    assert hol.ok and {c.what: c.missing_images for c in hol.splits} == {"query": 0, "database": 0}
    assert any("variant: original" in n for n in hol.notes)


def test_verify_unreadable(fake_yaml: Path) -> None:
    rep = verify("absent", datasets=fake_yaml)
    assert not rep.readable and not rep.ok and "TrainImages.txt: file not found" in (rep.error or "")


def test_cli_verify_table_json_and_exit_codes(fake_yaml: Path, tmp_path: Path) -> None:
    r = invoke("datasets", "verify", "voc2007", "--datasets", str(fake_yaml))
    assert r.exit_code == 0, r.output
    assert "trainval" in r.output and "match the published counts" in r.output
    r = invoke("datasets", "verify", "voc2007", "--datasets", str(fake_yaml), "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["ok"] is True and {s["what"]: s["found"] for s in d["splits"]}["test"] == 3
    assert {s["what"]: s["missing_images"] for s in d["splits"]}["test"] == 3
    r = invoke("datasets", "verify", "wrong", "--datasets", str(fake_yaml))
    assert r.exit_code == 1 and "mismatch" in r.output
    r = invoke("datasets", "verify", "wrong", "--datasets", str(fake_yaml), "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False
    r = invoke("datasets", "verify", "absent", "--datasets", str(fake_yaml))
    assert r.exit_code == 1 and "error:" in r.output and "TrainImages.txt: file not found" in r.output
    assert "Traceback" not in r.output
    r = invoke("datasets", "verify", "absent", "--datasets", str(fake_yaml), "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["readable"] is False
    r = invoke("datasets", "verify", "voc2007", "--root", str(tmp_path / "voc" / "VOCdevkit"), "--datasets", str(fake_yaml))
    assert r.exit_code == 0
    r = invoke("datasets", "verify", "nosuch", "--datasets", str(fake_yaml))
    assert r.exit_code == 1 and "neither a dataset" in r.output


def test_cli_list(fake_yaml: Path) -> None:
    r = invoke("datasets", "list", "--datasets", str(fake_yaml))
    assert r.exit_code == 0, r.output
    for name in ("voc2007", "oxford5k", "holidays", "absent"):
        assert name in r.output
    cfgs = load_dataset_configs(fake_yaml)
    assert locate(cfgs["voc2007"])[0] and locate(cfgs["holidays"])[0]
    assert locate(cfgs["absent"]) == (False, f"no folder {cfgs['absent'].root}")


def test_cli_download_manual_instructions(fake_yaml: Path, tmp_path: Path) -> None:
    r = invoke("datasets", "download", "holidays", "--datasets", str(fake_yaml), "--root", str(tmp_path / "elsewhere"))
    assert r.exit_code == 1 and "cannot be downloaded automatically" in r.output
    assert f"put it in {tmp_path / 'elsewhere'}" in " ".join(r.output.split())
    r = invoke("datasets", "download", "holidays", "--datasets", str(fake_yaml))  # already there
    assert r.exit_code == 0 and "already at" in r.output
    r = invoke("datasets", "download", "nosuch", "--datasets", str(fake_yaml))
    assert r.exit_code == 1 and "unknown dataset" in r.output


def test_open_dataset_by_name(fake_yaml: Path, tmp_path: Path) -> None:
    ds = open_dataset("holidays", datasets=fake_yaml)
    assert ds.name == "holidays" and ds.meta["metric"] == "holidays_map"
    assert open_dataset("holidays", datasets=fake_yaml, rotated=True).meta["variant"] == "rotated"


def test_cli_list_packaged_yaml() -> None:
    r = invoke("datasets", "list")
    assert r.exit_code == 0 and "voc2007" in r.output and "ukbench" in r.output


def test_cli_verify_counts_objects_of_attribute_sets(fake, yaml_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """aPascal has one sample per object, several per image file: the column says objects, not images."""
    fake.make_uiuc(tmp_path / "attr", images=False)
    yml = yaml_file({"apascal": {"adapter": "uiuc_attributes", "task": "attributes", "root": str(tmp_path / "attr"),
                                 "metric": "mean_auc", "options": {"subset": "apascal"}, "published": {"splits": {"train": 3}}}})
    r = invoke("datasets", "verify", "apascal", "--datasets", str(yml))
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if "missing files" in line)
    assert "objects" in header and "images" not in header
