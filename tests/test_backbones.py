"""Backbones: aliases, weights loading (checkpoint, random, missing), store features = a direct forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import transforms
from torchvision.models.feature_extraction import create_feature_extractor

from cnnbase.backbones import list_backbones, load_backbone
from cnnbase.errors import ConfigError, WeightsError


def test_registry_lists_torchvision_and_tiny() -> None:
    names = list_backbones()
    assert {"alexnet", "vgg16", "resnet50", "tiny_cnn"} <= set(names)
    assert list_backbones("resnet*") == [n for n in names if n.startswith("resnet")]


@pytest.mark.parametrize(
    ("model", "alias", "node"),
    [
        ("alexnet", "fc6", "classifier.2"),
        ("alexnet", "fc6_pre", "classifier.1"),
        ("alexnet", "fc7", "classifier.5"),
        ("alexnet", "conv5", "features.11"),
        ("alexnet", "pool5", "features.12"),
        ("vgg16", "conv5", "features.29"),
        ("vgg16", "pool5", "features.30"),
        ("vgg16", "fc7", "classifier.4"),
        ("resnet18", "pool", "flatten"),
        ("resnet18", "layer3", "layer3"),
        ("efficientnet_b0", "pool", "flatten"),
    ],
)
def test_layer_aliases(model: str, alias: str, node: str) -> None:
    bb = load_backbone(model, "random")
    assert bb.resolve_layer(alias).node == node


def test_unknown_layer_names_near_matches() -> None:
    bb = load_backbone("tiny_cnn", "random")
    with pytest.raises(ConfigError, match="did you mean fc6"):
        bb.resolve_layer("fc66")


def test_raw_graph_node_is_accepted() -> None:
    bb = load_backbone("tiny_cnn", "random")
    assert bb.resolve_layer("features.3").node == "features.3"


def test_missing_pretrained_weights_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as exc:
        load_backbone("alexnet", "IMAGENET1K_V1", allow_download=False)
    msg = str(exc.value)
    assert "\n" not in msg and "not in the torch cache" in msg and "--weights random" in msg


def test_unknown_weights_tag_lists_options() -> None:
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        load_backbone("alexnet", "IMAGENET9K")


def test_tiny_has_no_published_weights() -> None:
    with pytest.raises(WeightsError, match="--weights random"):
        load_backbone("tiny_cnn")


def test_checkpoint_roundtrip_gives_same_features(tmp_path: Path) -> None:
    bb = load_backbone("tiny_cnn", "random", seed=3)
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bb.model.state_dict().items()}}, ckpt)
    loaded = load_backbone("tiny_cnn", ckpt)
    assert loaded.weights_id.startswith("file:sha256:")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(bb.model(x), loaded.model(x))


def test_checkpoint_in_fp16_loads_into_the_fp32_model(tmp_path: Path) -> None:
    bb = load_backbone("tiny_cnn", "random", seed=3)
    ckpt = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in bb.model.state_dict().items()}, ckpt)
    loaded = load_backbone("tiny_cnn", ckpt)
    for k, v in loaded.model.state_dict().items():
        ref = bb.model.state_dict()[k]
        assert v.dtype == ref.dtype and not v.is_meta
        assert torch.equal(v, ref.half().to(ref.dtype) if ref.is_floating_point() else ref), k


def test_build_loaded_skips_the_random_init_and_falls_back_where_it_must() -> None:
    from cnnbase.backbones import build_loaded

    class WithScratch(torch.nn.Module):  # a non-persistent buffer: not in any state_dict
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.register_buffer("scale", torch.full((2,), 2.0), persistent=False)

    class Computes(torch.nn.Module):  # reads a value at build time: impossible on the meta device
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.bound = float(self.fc.weight.detach().abs().max())

    calls = []

    def counted(cls):  # type: ignore[no-untyped-def]
        def build():  # type: ignore[no-untyped-def]
            m = cls()
            calls.append(m.fc.weight.is_meta)
            return m
        return build

    state = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(2)}
    # builds tried: on the meta device (True) and, where that cannot work, for real (False)
    for cls, tries in ((_fc_only, [True]), (WithScratch, [True, False]), (Computes, [False])):
        calls.clear()
        model, result = build_loaded(counted(cls), state)
        assert calls == tries
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(model.fc.weight, state["fc.weight"]) and torch.equal(model.fc.bias, state["fc.bias"])
        assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert torch.equal(WithScratch().scale, build_loaded(WithScratch, state)[0].scale)


def _fc_only() -> torch.nn.Module:
    m = torch.nn.Module()
    m.fc = torch.nn.Linear(3, 2)
    return m


def test_checkpoint_with_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    state = load_backbone("tiny_cnn", "random").model.state_dict()
    k = next(k for k, v in state.items() if v.ndim == 4)
    state[k] = torch.zeros(1, *state[k].shape[1:])
    p = tmp_path / "shape.pth"
    torch.save(state, p)
    with pytest.raises(WeightsError, match="does not match the architecture"):
        load_backbone("tiny_cnn", p)


def test_torchvision_weights_load_from_torchs_cache() -> None:
    """The weights API path, offline: a state_dict where torch's cache keeps IMAGENET1K_V1 (TORCH_HOME is the test's
    own) is loaded, with the weights' preprocessing; one that does not fit says how to fix it."""
    from torchvision.models import AlexNet_Weights

    from cnnbase.backbones import weights_cache_path

    src = load_backbone("alexnet", "random", seed=5)
    path = weights_cache_path(AlexNet_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(src.model.state_dict(), path)
    bb = load_backbone("alexnet", allow_download=False)
    assert bb.weights_id == "torchvision:AlexNet_Weights.IMAGENET1K_V1" and bb.preprocess.crop == 224
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(bb.model(x), src.model(x))
    torch.save({k: v for k, v in src.model.state_dict().items() if not k.startswith("classifier.6")}, path)
    with pytest.raises(WeightsError, match="do not fit alexnet.*delete"):
        load_backbone("alexnet", allow_download=False)


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    p = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, p)
    with pytest.raises(WeightsError, match="safely"):
        load_backbone("tiny_cnn", p)


def test_checkpoint_of_other_architecture_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    with pytest.raises(WeightsError, match="does not match"):
        load_backbone("tiny_cnn", p)


def test_random_weights_are_seeded() -> None:
    a = load_backbone("tiny_cnn", "random", seed=1).model.state_dict()
    b = load_backbone("tiny_cnn", "random", seed=1).model.state_dict()
    c = load_backbone("tiny_cnn", "random", seed=2).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_store_features_equal_direct_forward(tmp_path: Path, random_folder: Path) -> None:
    """The stored fc6 of alexnet = torchvision's standard eval transform + a plain forward to that node."""
    from PIL import Image

    from cnnbase.features.store import FeatureStore
    from cnnbase.runner import Context, FeatureOptions, extract, load_features

    ctx = Context(store=FeatureStore(tmp_path / "store"), progress=False)
    opts = FeatureOptions(weights="random", workers=0, batch_size=4, precision="fp32")
    extract("alexnet", str(random_folder), layers="fc6,conv5", splits=["all"], opts=opts, ctx=ctx)
    bb = load_backbone("alexnet", "random")
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ds_paths = sorted(random_folder.rglob("*.jpg"))
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in ds_paths])
    gm = create_feature_extractor(bb.model, {"classifier.2": "fc6", "features.11": "conv5"}).eval()
    with torch.inference_mode():
        ref = {k: v.flatten(1).numpy() for k, v in gm(x).items()}
    for layer in ("fc6", "conv5"):
        f = load_features("alexnet", str(random_folder), split="all", layer=layer, opts=opts, ctx=ctx)
        order = [ds_paths.index(random_folder / i) for i in f.ids]
        np.testing.assert_allclose(np.asarray(f.array), ref[layer][order], rtol=1e-4, atol=1e-5)
