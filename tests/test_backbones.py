"""Backbones: aliases, weights loading (checkpoint, random, missing), store features = a direct forward pass."""

from __future__ import annotations

import re
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


def test_published_densenet_key_names_are_mapped() -> None:
    """torchvision's DenseNet files name ``denselayer1.norm1`` as ``denselayer1.norm.1``: they must load as published."""
    from torchvision.models import DenseNet121_Weights

    from cnnbase.backbones import weights_cache_path

    src = load_backbone("densenet121", "random", seed=3)
    old_style = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in src.model.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old_style
    path = weights_cache_path(DenseNet121_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(old_style, path)
    bb = load_backbone("densenet121", allow_download=False)
    for k, v in src.model.state_dict().items():
        assert torch.equal(bb.model.state_dict()[k], v), k


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


# Default layers name nodes that torchvision's feature extraction accepts, for every registered model. RegNets compute
# their widths while they are built, so they cannot be built on the meta device: the two smallest, built for real,
# stand for their class.
_REAL_BUILD = {"regnet_x_400mf", "regnet_y_400mf"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in list_backbones() if not n.startswith("regnet") or n in _REAL_BUILD]
)  # fmt: skip
def test_default_layer_is_a_feature_extraction_node(name: str) -> None:
    """The default layer, ``pool`` and ``logits`` of every model are nodes of ``get_graph_node_names`` (eval), the
    names ``create_feature_extractor`` accepts; before, ViTs tapped FX's own ``getitem_29`` and every ViT failed."""
    import warnings

    from torchvision.models.feature_extraction import get_graph_node_names

    from cnnbase.backbones import BACKBONES
    from cnnbase.backbones.torchvision_ import compute_aliases

    spec = BACKBONES.get(name)
    with warnings.catch_warnings(), torch.device("cpu" if name in _REAL_BUILD else "meta"):
        warnings.simplefilter("ignore")  # init-scheme notices, train/eval graph differences: not what this is about
        model = spec.builder()
        taps = compute_aliases(spec, model)
        eval_nodes = get_graph_node_names(model)[1]
    for alias in {spec.default_layer, "pool", "logits"}:
        assert taps[alias].node in eval_nodes, (alias, taps[alias].node)


@pytest.mark.parametrize(
    ("model", "node", "dim"),
    [("vit_b_32", "getitem_5", 768), ("swin_t", "flatten", 768), ("convnext_tiny", "classifier.1", 768)],
)
def test_extraction_at_the_default_layer_of_unusual_graphs(model: str, node: str, dim: int) -> None:
    """ViT (class token taken by indexing), Swin and ConvNeXt: the default layer extracts, and it is the vector the
    final linear classifier reads (that layer applied to it gives the model's logits)."""
    bb = load_backbone(model, "random")
    tap = bb.resolve_layer(None)
    assert tap.name == "pool" and tap.node == node
    gm = create_feature_extractor(bb.model, [tap.node]).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        pooled = gm(x)[tap.node]
        head = [m for m in bb.model.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert pooled.shape == (1, dim)
        torch.testing.assert_close(head(pooled), bb.model(x))


def _cached_alexnet() -> Path:
    from torchvision.models import AlexNet_Weights

    from cnnbase.backbones import weights_cache_path

    path = weights_cache_path(AlexNet_Weights.IMAGENET1K_V1)  # under the test's own TORCH_HOME
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _no_download(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("a cached file was there: nothing should be downloaded")


def _truncated_checkpoint(path: Path) -> None:
    torch.save({"w": torch.zeros(4096)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("empty", "the file is empty"), ("text", "it starts with b'garbage"), ("truncated", "probably cut short")],
)
def test_damaged_cached_weights_say_so(kind: str, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged file in torch's cache: one line naming it and how to fix it, never 'could not be downloaded', never
    a download attempt over it, never random weights. Before: 'Aborted.' (empty), a ValueError (text), or the
    false 'not in the torch cache' (truncated)."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    path = _cached_alexnet()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("garbage\n")
    else:
        _truncated_checkpoint(path)
    with pytest.raises(WeightsError) as exc:
        load_backbone("alexnet")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"cached weights file {path} is damaged (")
    assert reason in msg and "delete it and run again" in msg and "--weights PATH.pth" in msg
    assert "could not be downloaded" not in msg


def test_damaged_cached_weights_through_the_cli(random_folder: Path, tmp_path: Path) -> None:
    """The empty cached file through the CLI: the error line and exit status 1, not click's 'Aborted.'."""
    from typer.testing import CliRunner

    from cnnbase.cli import app

    path = _cached_alexnet()
    path.write_bytes(b"")
    r = CliRunner().invoke(app, ["extract", "alexnet", str(random_folder), "--store", str(tmp_path / "s"),
                                 "--workers", "0", "--no-progress"], catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 1
    assert "is damaged (the file is empty)" in r.output and "Aborted" not in r.output and "Traceback" not in r.output


def test_failed_download_is_one_line_without_torchs_downloading_line(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline: the user sees only the error, not torch.hub's 'Downloading: "URL" to PATH' before it."""
    import urllib.error

    def offline(url: str, dst: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="not in the torch cache .* could not be downloaded .*Name or service"):
        load_backbone("alexnet")
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err


def test_downloaded_weights_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The download path: the file is fetched to torch's cache (here by a fake that writes a state_dict), then loaded."""
    from torchvision.models import SqueezeNet1_1_Weights

    from cnnbase.backbones import weights_cache_path

    src = load_backbone("squeezenet1_1", "random", seed=4)
    fetched = []

    def fake(url: str, dst: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        fetched.append(url)
        torch.save(src.model.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    bb = load_backbone("squeezenet1_1")
    assert fetched == [SqueezeNet1_1_Weights.IMAGENET1K_V1.url]
    assert weights_cache_path(SqueezeNet1_1_Weights.IMAGENET1K_V1).is_file()
    assert bb.weights_id == "torchvision:SqueezeNet1_1_Weights.IMAGENET1K_V1"
    assert all(torch.equal(v, src.model.state_dict()[k]) for k, v in bb.model.state_dict().items())


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("empty", "is not a PyTorch checkpoint (the file is empty)"),
        ("text", "is not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle"),
        ("bytes", "is not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle"),
        ("truncated", "is damaged (a broken zip archive, probably cut short)"),
        ("module", "safely: it pickles torch.nn.modules.linear.Linear (a whole model, not its state_dict)"),
    ],
)
def test_bad_checkpoint_files_say_what_they_are(kind: str, expected: str, tmp_path: Path) -> None:
    """--weights PATH that is no state_dict: empty (was an IndexError), text or random bytes (was 'cannot load
    safely' with torch's weights_only notice), cut short, or a whole pickled module (was torch's message with ANSI
    codes, cut mid-sentence). Each is one plain line ending with the fix."""
    p = tmp_path / f"{kind}.pth"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("garbage\n")
    elif kind == "bytes":
        p.write_bytes(bytes(range(7, 256)) * 4)
    elif kind == "truncated":
        _truncated_checkpoint(p)
    else:
        torch.save(torch.nn.Linear(2, 2), p)
    with pytest.raises(WeightsError) as exc:
        load_backbone("tiny_cnn", p)
    msg = str(exc.value)
    assert expected in msg and str(p) in msg, msg
    assert "\n" not in msg and "\x1b" not in msg and "weights_only` argument" not in msg
    assert msg.endswith("torch.save(model.state_dict(), path)")


def test_published_weights_build_the_model_torchvision_builds_for_them() -> None:
    """GoogLeNet's weights expect input rescaled inside the model (transform_input); a plain build would feed them
    ImageNet-normalised pixels. A ViT's SWAG weights need the model built at their image size."""
    from torchvision.models import GoogLeNet, GoogLeNet_Weights, ViT_B_16_Weights

    from cnnbase.backbones import published_build_kwargs, weights_cache_path

    assert published_build_kwargs("vit_b_16", ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1) == {"image_size": 384}
    assert published_build_kwargs("vit_b_16", ViT_B_16_Weights.IMAGENET1K_V1) == {"image_size": 224}
    torch.manual_seed(0)
    published = GoogLeNet(transform_input=True, aux_logits=True, init_weights=True).eval()
    path = weights_cache_path(GoogLeNet_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(published.state_dict(), path)
    bb = load_backbone("googlenet", allow_download=False)
    assert bb.model.transform_input is True
    x = torch.randn(2, 3, 64, 64)

    def first_conv(m: torch.nn.Module) -> torch.Tensor:  # random weights make the logits constant: look early
        seen = []
        handle = m.conv1.register_forward_hook(lambda mod, inp, out: seen.append(out))
        with torch.inference_mode():
            m(x)
        handle.remove()
        return seen[0]

    assert torch.equal(first_conv(bb.model), first_conv(published))
    published.transform_input = False  # what the plain build computed: other numbers
    assert not torch.allclose(first_conv(bb.model), first_conv(published))
