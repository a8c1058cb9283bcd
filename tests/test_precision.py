"""--precision auto: a fidelity probe on the run's own images decides bf16 vs fp32; compile pads the last batch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cnnbase.features import extract as extract_mod
from cnnbase.features.extract import fidelity, passes, probe_sample
from cnnbase.features.store import FeatureStore
from cnnbase.runner import Context, FeatureOptions, extract, resolve_compile

OPTS = FeatureOptions(weights="random", workers=0, batch_size=4)


def _ctx(tmp_path: Path) -> Context:
    return Context(store=FeatureStore(tmp_path / "store"), progress=False)


def test_fidelity_figures_hand_cases() -> None:
    x = np.eye(4, 8) + 0.1
    f = fidelity(x, x)
    assert f["min_cosine"] == pytest.approx(1.0) and f["knn10_overlap"] == 1.0 and f["top1_agreement"] == 1.0
    y = x.copy()
    y[0] = -y[0]  # one image flipped: cosine -1
    assert fidelity(x, y)["min_cosine"] == pytest.approx(-1.0)
    assert not passes(fidelity(x, y))


def test_probe_sample_is_spread_and_deterministic() -> None:
    assert probe_sample(5) == [0, 1, 2, 3, 4]
    s = probe_sample(1000)
    assert len(s) == 64 and s[0] == 0 and s[-1] == 999 and s == probe_sample(1000)


@pytest.mark.skipif(extract_mod.fast_precision() == "fp32", reason="no native bf16 on this CPU")
def test_auto_probes_records_and_caches(tmp_path: Path, random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    run = e.manifest()["run"]
    assert run["requested_precision"] == "auto" and run["probe"]["candidate"] == "bf16"
    assert run["probe"]["verdict"] in ("pass", "fail") and run["precision"] == run["probe"]["chosen"]
    assert e.fields["precision"] == run["precision"]  # the key holds the precision actually used
    assert len(list((ctx.store.root / "_probes").glob("*.json"))) == 1
    import cnnbase.runner as runner

    monkeypatch.setattr(runner, "_run_probe", lambda *a, **k: pytest.fail("probe not cached"))
    (e2,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    assert e2.path == e.path
    # a store shared with a machine whose bf16 units differ (here: AMX tiles) is probed there again
    monkeypatch.setattr(extract_mod, "compute_kind", lambda device: "cpu:AVX512+amx_tile")
    with pytest.raises(pytest.fail.Exception, match="probe not cached"):
        extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)


@pytest.mark.skipif(extract_mod.fast_precision() == "fp32", reason="no native bf16 on this CPU")
def test_one_probe_decides_every_split(tmp_path: Path, texture_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train and test are probed once, on images spread over both, and extracted at the same precision."""
    import cnnbase.runner as runner

    calls = []
    real = runner._run_probe
    monkeypatch.setattr(runner, "_run_probe", lambda bb, pre, samples, *a: calls.append(samples) or real(bb, pre, samples, *a))
    ctx = _ctx(tmp_path)
    tr, te = extract("tiny_cnn", str(texture_set), opts=OPTS, ctx=ctx)
    ds = ctx.dataset(str(texture_set))
    assert (tr.fields["split"], te.fields["split"]) == ("train", "test") and len(calls) == 1
    assert [s.id for s in calls[0]] == [s.id for s in ds.samples("train") + ds.samples("test")]
    r_tr, r_te = tr.manifest()["run"], te.manifest()["run"]
    assert r_tr["probe"] == r_te["probe"] and r_tr["probe"]["splits"] == ["train", "test"]
    assert tr.fields["precision"] == te.fields["precision"] == r_tr["probe"]["chosen"]
    assert len(list((ctx.store.root / "_probes").glob("*.json"))) == 1
    extract("tiny_cnn", str(texture_set), splits=["test"], opts=replace(OPTS, pool="avg"), ctx=ctx)
    assert len(calls) == 2  # other features (here: pooled) are probed on their own


@pytest.mark.skipif(extract_mod.fast_precision() == "fp32", reason="no native bf16 on this CPU")
def test_auto_falls_back_to_fp32_when_probe_fails(tmp_path: Path, random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_mod, "PROBE_THRESHOLDS", {"min_cosine": 1.01, "knn10_overlap": 1.0, "top1_agreement": 1.0})
    ctx = _ctx(tmp_path)
    (e,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=OPTS, ctx=ctx)
    run = e.manifest()["run"]
    assert run["probe"]["verdict"] == "fail" and run["precision"] == "fp32" and e.fields["precision"] == "fp32"
    (same,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(OPTS, precision="fp32"), ctx=ctx)
    assert same.path == e.path  # explicit fp32 and auto→fp32 share one entry


def test_bf16_run_leaves_the_callers_model_in_fp32(tmp_path: Path, random_folder: Path) -> None:
    import torch

    ctx = _ctx(tmp_path)
    extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(OPTS, precision="bf16"), ctx=ctx)
    bb = next(iter(ctx._backbones.values()))
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())


@pytest.mark.parametrize("model", ["tiny_cnn", "resnet18"])
def test_low_precision_runner_holds_a_cast_copy(model: str) -> None:
    """Each floating parameter and buffer is copied straight into bf16 (the cast values, in memory of its own, still
    a Parameter where it was one); integer buffers are copied as they are."""
    import torch

    from cnnbase.backbones import load_backbone
    from cnnbase.features.extract import ModelRunner

    bb = load_backbone(model, "random")
    r = ModelRunner(bb, {"f": bb.resolve_layer(bb.spec.default_layer).node}, precision="bf16")
    src = {**dict(bb.model.named_parameters()), **dict(bb.model.named_buffers())}
    got = [*r._eager.named_parameters(), *r._eager.named_buffers()]
    assert got
    for name, t in got:
        ref = src[name]
        assert t.data_ptr() != ref.data_ptr() and isinstance(t, torch.nn.Parameter) == isinstance(ref, torch.nn.Parameter)
        assert torch.equal(t, ref.to(torch.bfloat16) if ref.is_floating_point() else ref), name
        assert t.dtype == (torch.bfloat16 if ref.is_floating_point() else ref.dtype)
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())


def test_compile_only_for_long_runs() -> None:
    assert resolve_compile(FeatureOptions(), 100) is False
    assert resolve_compile(FeatureOptions(), 5000) is True
    assert resolve_compile(FeatureOptions(compile=False), 5000) is False
    assert resolve_compile(FeatureOptions(compile=True), 10) is True
    # timed: AlexNet-like (6 ms per input on the CPU) never pays on 5,000 inputs; ResNet-50-like (40 ms) does
    assert resolve_compile(FeatureOptions(), 5000, 0.006) is False
    assert resolve_compile(FeatureOptions(), 5000, 0.040) is True
    assert resolve_compile(FeatureOptions(), 400, 0.040) is False
    assert resolve_compile(FeatureOptions(compile=False), 5000, 0.040) is False


def test_padded_batch_gives_same_rows() -> None:
    import torch

    from cnnbase.backbones import load_backbone
    from cnnbase.features.extract import ModelRunner

    bb = load_backbone("tiny_cnn", "random")
    r = ModelRunner(bb, {"fc6": "classifier.2"}, precision="fp32")
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    # Equal to fp32 rounding, not bitwise: oneDNN blocks a matmul by batch size on some CPUs (an AMD EPYC with
    # AVX-512 moved 26 of 96 values by up to 3e-6 relative when 3 rows were padded to 8; an Intel AMX host did not).
    np.testing.assert_allclose(r(x)["fc6"], r(x, pad_to=8)["fc6"], rtol=1e-5, atol=1e-6)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cnnbase.errors import ConfigError
    from cnnbase.features.extract import compute_kind, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="sees no CUDA device.*--device cpu"):
        resolve_device("cuda")
    for bad in ("gpu", "cuda:x", "cuda:"):
        with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="2 CUDA device"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert compute_kind("cuda:1") == "cuda:NVIDIA H100 80GB HBM3" and compute_kind("cpu").startswith("cpu:")


def test_model_gets_ordinary_tensors_whichever_path_prepared_them() -> None:
    """A compiled model guards on inference vs ordinary tensors: every input path must hand it the same kind, or
    the first real batch after the (uint8) warm-up compiles the model again."""
    import torch

    from cnnbase.backbones import load_backbone
    from cnnbase.features.extract import ModelRunner
    from cnnbase.features.views import normalize_batch

    bb = load_backbone("tiny_cnn", "random")
    r = ModelRunner(bb, {"fc6": bb.resolve_layer("fc6").node}, precision="bf16")
    seen: list[bool] = []
    eager = r.model
    r.model = lambda x: seen.append(x.is_inference()) or eager(x)
    u8 = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    normed = normalize_batch(u8, bb.preprocess, torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        u8_inf = u8.clone()
    outs = [r(u8), r(normed), r(u8_inf), r(u8, pad_to=8), r(normed, pad_to=8)]
    assert seen == [False] * 5
    for o in outs[1:3]:  # the same numbers whichever way the batch came
        np.testing.assert_array_equal(o["fc6"], outs[0]["fc6"])


def test_cpu_split_balances_decode_and_model() -> None:
    from cnnbase.features.extract import split_for

    # AlexNet on an AMX host: decode and model cost about the same → one core each (just above decoding in turns)
    assert split_for(2, 0.006, 0.006)[:2] == (1, 1)
    # ResNet-50-like: the model costs 10x the decode → decoding in this process, in turns with a model on every core
    assert split_for(2, 0.003, 0.038) == (0, 2, pytest.approx(extract_mod.PHASED_EFFICIENCY * 2 / 0.041))
    # decode-heavy on 8 cores: in turns (8 / 12 ms, 600 img/s at 0.9) beats 6 workers + 2 threads (600 / 1.1) ...
    assert split_for(8, 0.010, 0.002) == (0, 8, pytest.approx(600))
    # ... unless the split balances exactly: 6 workers decode 1000 img/s, 2 threads run the model at 1000
    assert split_for(8, 0.006, 0.002) == (6, 2, pytest.approx(1000 / extract_mod.OWN_SPLIT_MARGIN))
    # a model cheaper per core on one thread (no synchronisation) tips a near-tie to one core each
    assert split_for(2, 0.0039, 0.0092)[:2] == (0, 2)
    assert split_for(2, 0.0039, 0.0092, 0.0065)[:2] == (1, 1)
    # one core: nothing to split
    assert split_for(1, 0.003, 0.01)[:2] == (0, 1)


def test_cpu_plan_times_both_thread_counts_interleaved(random_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan times the model on n threads and on one, alternately (a slow spell hits both), warm, and leaves the
    thread count as it found it."""
    import torch

    from cnnbase.backbones import load_backbone
    from cnnbase.datasets import open_dataset
    from cnnbase.features.extract import ModelRunner, plan_cpu_split
    from cnnbase.features.views import JitterSpec

    bb = load_backbone("tiny_cnn", "random")
    runner = ModelRunner(bb, {"fc6": bb.resolve_layer("fc6").node}, precision="fp32")
    seen: list[int] = []
    real_call = ModelRunner.__call__
    monkeypatch.setattr(ModelRunner, "__call__", lambda self, x, **k: seen.append(torch.get_num_threads()) or real_call(self, x, **k))
    monkeypatch.setattr(extract_mod, "cores", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        workers, threads, plan = plan_cpu_split(runner, open_dataset(str(random_folder)).samples("all"), JitterSpec.parse("none"), 32)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1, 2, 1, 2, 1]  # warm-ups on each count, then n, 1, n, 1
    assert workers >= 0 and 1 <= threads <= 2
    assert plan["decode_ms_per_image"] > 0 and plan["model_core_ms_per_image"] > 0 and plan["model_core_ms_per_image_1_thread"] > 0
    assert plan["predicted_images_per_s"] > 0 and plan["model_compiled"] is False


def test_cpu_plan_runs_on_long_runs_once_per_dataset(tmp_path: Path, texture_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --workers the CPU plan runs only where it can repay its timing, once for all splits of a dataset
    (recorded with the split it was timed on); shorter runs decode in turns with the model (0 workers)."""
    import cnnbase.runner as runner_mod

    calls: list[int] = []
    def plan(runner, samples, *args):  # type: ignore[no-untyped-def]
        calls.append(len(samples))
        return 1, 1, {"model_core_ms_per_image": 1.0}

    monkeypatch.setattr(runner_mod, "plan_cpu_split", plan)
    opts = replace(OPTS, workers=None, precision="fp32")
    entries = extract("tiny_cnn", str(texture_set), opts=opts, ctx=_ctx(tmp_path / "short"))
    assert calls == [] and {e.manifest()["run"]["workers"] for e in entries} == {0}
    monkeypatch.setattr(runner_mod, "PLAN_MIN_INPUTS", 10)
    entries = extract("tiny_cnn", str(texture_set), opts=opts, ctx=_ctx(tmp_path / "long"))
    assert len(entries) == 2 and len(calls) == 1
    runs = [e.manifest()["run"] for e in entries]
    assert [(r["workers"], r["threads"]) for r in runs] == [(1, 1), (1, 1)]
    assert [r["cpu_split"]["timed_on"] for r in runs] == ["train", "train"]
    assert {r["device"] for r in runs} == {"cpu"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_worker_normalised_batches_equal_in_process_ones(tmp_path: Path, random_folder: Path, precision: str) -> None:
    """A decode worker and the pool threads decoding in turns with the model (workers=0) both normalise the batch on
    the CPU; the stored features are bitwise the same."""
    a_opts = replace(OPTS, precision=precision, workers=0)
    (a,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=a_opts, ctx=_ctx(tmp_path / "a"))
    (b,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(a_opts, workers=1), ctx=_ctx(tmp_path / "b"))
    np.testing.assert_array_equal(np.load(a.path / "features.npy"), np.load(b.path / "features.npy"))


@pytest.mark.parametrize("threads", [1, 3])
def test_phased_batches_are_the_dataloaders(tmp_path: Path, random_folder: Path, threads: int) -> None:
    """Decoding in this process (pool threads, each batch cut into parts) yields a DataLoader's batches tensor for
    tensor, bad images included, and the normalised batch equals the model's own normalisation of the uint8 one."""
    import functools

    import torch
    from torch.utils.data import DataLoader

    from cnnbase.backbones import load_backbone
    from cnnbase.datasets import open_dataset
    from cnnbase.features.extract import ModelRunner, ShardBatches, _collate, _ViewsDataset, phased_batches
    from cnnbase.features.views import JitterSpec

    bad = random_folder / "a" / "zz bad.jpg"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"not a jpeg")
    samples = open_dataset(str(random_folder)).samples("all")
    bb = load_backbone("tiny_cnn", "random")
    runner = ModelRunner(bb, {"fc6": bb.resolve_layer("fc6").node}, precision="bf16")
    ds = _ViewsDataset(samples, bb.preprocess, JitterSpec.parse("razavian"))
    norm = (bb.preprocess, torch.bfloat16, True)
    sampler = ShardBatches([range(0, 5), range(5, len(samples))], 4)  # batches of 4, 1 (a shard's end), 4, ...
    ref = list(DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=functools.partial(_collate, normalize=norm)))
    got = list(phased_batches(ds, sampler, threads, norm))
    raw = list(phased_batches(ds, sampler, threads))
    assert len(got) == len(ref) == len(raw) and any(b for *_, b in got)
    for (i1, g1, x1, b1), (i2, g2, x2, b2), (_, _, u, _) in zip(ref, got, raw):
        assert (i1, g1, b1) == (i2, g2, b2)
        assert x2.dtype == torch.bfloat16 and x2.is_contiguous(memory_format=torch.channels_last)
        assert u.dtype == torch.uint8 and torch.equal(x1, x2)
        assert np.array_equal(runner(u)["fc6"], runner(x2)["fc6"])


@pytest.mark.parametrize("jitter", ["none", "razavian", "spatial:2"])
def test_views_stay_channels_last_and_normalise_as_contiguous_ones(jitter: str) -> None:
    """Views keep PIL's pixel order (channels-last memory): the batch and its normalisation never transpose, and
    give exactly the values of the contiguous (N, 3, H, W) path, in fp32 and bf16."""
    import torch
    from PIL import Image

    from cnnbase.backbones.spec import Preprocess
    from cnnbase.features.extract import join_views
    from cnnbase.features.views import JitterSpec, make_views, normalize_batch, preprocess_pil

    rng = np.random.default_rng(0)
    pre = Preprocess(resize=40, crop=32)
    imgs = [Image.fromarray(rng.integers(0, 256, size=(48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(3)]
    views = [make_views(im, pre, JitterSpec.parse(jitter)) for im in imgs]
    if jitter == "none":
        assert torch.equal(views[0][0], preprocess_pil(imgs[0], pre))
    x = join_views(views)
    assert x.shape == (sum(len(v) for v in views), 3, 32, 32) and x.dtype == torch.uint8
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    ref = torch.cat([v.contiguous() for v in views])
    assert torch.equal(x, ref)
    for dtype in (torch.float32, torch.bfloat16):
        y = normalize_batch(x, pre, dtype)
        assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == dtype
        assert torch.equal(y, normalize_batch(ref, pre, dtype))
    to_tensor = (ref.float() / 255 - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize_batch(x, pre), to_tensor, rtol=1e-6, atol=1e-6)  # ToTensor + Normalize


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (333, 256), (256, 256), (300, 224), (640, 480), (1000, 90)])
def test_region_resize_within_one_level_of_the_exact_transform(size: tuple[int, int]) -> None:
    from PIL import Image

    from cnnbase.backbones.spec import Preprocess
    from cnnbase.features.views import _region_resize, preprocess_pil

    rng = np.random.default_rng(sum(size))
    small = rng.integers(0, 256, size=(size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    for interp in ("bilinear", "bicubic"):
        exact = Preprocess(interpolation=interp)
        a = preprocess_pil(img, exact).numpy().astype(int)
        b = preprocess_pil(img, replace(exact, region_resize=True)).numpy().astype(int)
        assert a.shape == b.shape == (3, 224, 224)
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.05
        # the region path runs wherever the image is reduced; enlarged or already-sized images take the exact one
        assert (_region_resize(img, replace(exact, region_resize=True)) is not None) == (min(size) > 256)


def test_fast_path_resizes_the_region_and_keys_it(tmp_path: Path, random_folder: Path) -> None:
    from cnnbase.backbones.spec import Preprocess

    assert "region_resize" not in Preprocess().to_dict()  # the exact path keeps its old store keys
    ctx = _ctx(tmp_path)
    opts = replace(OPTS, workers=0)
    (e32,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(opts, precision="fp32"), ctx=ctx)
    (e16,) = extract("tiny_cnn", str(random_folder), splits=["all"], opts=replace(opts, precision="bf16"), ctx=ctx)
    assert e32.manifest()["run"]["region_resize"] is False and e16.manifest()["run"]["region_resize"] is True
    assert e16.fields["preprocess"]["region_resize"] is True and "region_resize" not in e32.fields["preprocess"]


@pytest.mark.skipif(extract_mod.fast_precision() == "fp32", reason="no native bf16 on this CPU")
@pytest.mark.parametrize("faithful", [True, False])
def test_compiled_model_is_probed_before_the_run(
    tmp_path: Path, texture_set: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, faithful: bool
) -> None:
    """A compiled model is checked against the probe's kept fp32 features before the run; one that is not faithful
    (here: a stand-in whose features belong to other images) is dropped for the eager model, said in one line."""
    import cnnbase.runner as runner_mod
    from cnnbase.features.extract import ModelRunner

    def fake_compile(self):  # type: ignore[no-untyped-def]
        eager = self._eager
        self.model = eager if faithful else (lambda x: {k: v.roll(1, 0) for k, v in eager(x).items()})
        self.compiled = True

    monkeypatch.setattr(ModelRunner, "enable_compile", fake_compile)
    ctx = _ctx(tmp_path / "c")
    extract("tiny_cnn", str(texture_set), splits=["train"], opts=OPTS, ctx=ctx)  # the probe, and its fp32 features
    (plain,) = extract("tiny_cnn", str(texture_set), splits=["test"], opts=OPTS, ctx=ctx)
    if plain.manifest()["run"]["precision"] != "bf16":
        pytest.skip("the bf16 probe did not pass for tiny_cnn on this CPU")
    assert len(list((ctx.store.root / "_probes").glob("*.fp32.npy"))) == 1
    (e,) = extract("tiny_cnn", str(texture_set), splits=["test"], opts=replace(OPTS, compile=True), ctx=_ctx(tmp_path / "c2"))
    run = e.manifest()["run"]
    fig = run["compiled_probe"]
    assert fig["images"] == run["probe"]["images"] and fig["verdict"] == ("pass" if faithful else "fail")
    assert run["compile"] is faithful
    err = capsys.readouterr().err
    assert ("running it uncompiled" in err) is not faithful
    np.testing.assert_array_equal(np.load(e.path / "features.npy"), np.load(plain.path / "features.npy"))
    monkeypatch.setattr(runner_mod, "_probe_compiled", lambda *a: pytest.fail("no compiled model: nothing to check"))
    extract("tiny_cnn", str(texture_set), splits=["test"], opts=replace(OPTS, compile=False), ctx=_ctx(tmp_path / "c3"))


@pytest.mark.skipif(extract_mod.fast_precision() == "fp32", reason="no native bf16 on this CPU")
def test_probe_without_a_readable_image_keeps_fp32(tmp_path: Path) -> None:
    from cnnbase.runner import _run_probe, load_backbone

    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    for i in range(3):
        (bad / "a" / f"{i}.jpg").write_bytes(b"<html>not an image</html>")
    from cnnbase.datasets import open_dataset

    ds = open_dataset(str(bad))
    bb = load_backbone("tiny_cnn", "random")
    figs = _run_probe(bb, bb.preprocess, ds.samples("all"), ["fc6"], OPTS, "bf16")
    assert figs == {"fc6": {"verdict": "no readable image to probe", "chosen": "fp32"}}
