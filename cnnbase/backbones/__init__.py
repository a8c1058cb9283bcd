"""Backbones: build a registered network, load its weights, resolve layer names to graph nodes.

Example:
    >>> from cnnbase.backbones import load_backbone
    >>> bb = load_backbone("tiny_cnn", weights="random")
    >>> bb.weights_id, bb.resolve_layer("fc6").node
    ('random:seed=0', 'classifier.2')
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

from ..errors import ConfigError, WeightsError
from . import tiny  # noqa: F401  (registers tiny_cnn)
from .spec import BackboneSpec, LayerTap, Preprocess
from .torchvision_ import BACKBONES, compute_aliases, preprocess_from_weights


@dataclass
class LoadedBackbone:
    """A network in eval mode with its weights identity, preprocessing and taps."""

    spec: BackboneSpec
    model: nn.Module
    weights_id: str
    preprocess: Preprocess

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_random(self) -> bool:
        return self.weights_id.startswith("random")

    @cached_property
    def taps(self) -> dict[str, LayerTap]:
        """Named aliases of this model (``fc6``, ``pool``, ...)."""
        return compute_aliases(self.spec, self.model)

    @cached_property
    def graph_nodes(self) -> list[str]:
        """Every tappable node of the eval graph (torchvision.models.feature_extraction)."""
        return get_graph_node_names(self.model)[1]

    def resolve_layer(self, name: str | None) -> LayerTap:
        """An alias or a raw graph node name → :class:`LayerTap`; unknown names list the valid ones."""
        name = name or self.spec.default_layer
        if name in self.taps:
            return self.taps[name]
        if name in self.graph_nodes:
            return LayerTap(name, name, "graph node")
        import difflib

        near = difflib.get_close_matches(name, [*self.taps, *self.graph_nodes], n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ConfigError(
            f"{self.name} has no layer {name!r}; {hint}see `cnnbase models layers {self.name}` for aliases and graph nodes"
        )


def weights_cache_path(weights: object) -> Path:
    """Where torchvision's weights API keeps (or would keep) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)  # type: ignore[attr-defined]


def is_cached(weights: object) -> bool:
    return weights_cache_path(weights).is_file()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_loaded(builder, state: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """``builder()`` with ``state`` loaded (``strict=False``): (model, the missing and unexpected keys).

    The model is built on the meta device and takes the state's tensors, cast to its own dtypes, so the random
    initialisation that loading would overwrite is never computed (VGG-16: 1.1 s on 2 cores; AlexNet 0.3 s). Where
    that cannot work (a builder that computes with its tensors, or a tensor the state does not hold, such as a
    non-persistent buffer), the model is built for real and the state copied in.
    """
    try:
        with torch.device("meta"):
            model = builder()
        own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        cast = {
            k: v.to(own[k].dtype) if k in own and v.is_floating_point() and own[k].is_floating_point() else v
            for k, v in state.items()
        }
        result = model.load_state_dict(cast, strict=False, assign=True)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            return model, result
    except Exception:  # noqa: BLE001 - any failure here has the plain path below as its answer
        pass
    model = builder()
    return model, model.load_state_dict(state, strict=False)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_sentence(text: str, limit: int = 120) -> str:
    """torch's error text as a clause of a one-line message: ANSI codes gone, whitespace collapsed, first sentence."""
    text = " ".join(_ANSI.sub("", text).split())
    text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _load_failure(path: Path, exc: BaseException) -> tuple[str, str]:
    """Why ``torch.load(path, weights_only=True)`` raised ``exc``: (kind, reason), kind one of

    ``"unsafe"`` (a real pickle that holds more than tensors: only unsafe unpickling would load it),
    ``"not"`` (not a file ``torch.save`` wrote: empty, text, random bytes, another format) and
    ``"damaged"`` (``torch.save``'s format, but cut short or corrupt).
    """
    msg = _ANSI.sub("", str(exc))
    unsafe = re.search(r"Unsupported (?:global: GLOBAL|class) ([\w.]+)", msg)
    if unsafe:
        what = unsafe.group(1).rstrip(".")
        whole = " (a whole model, not its state_dict)" if what.startswith(("torch.nn.", "torchvision.models.")) else ""
        return "unsafe", f"it pickles {what}{whole}, which weights_only=True refuses because unpickling it can run code"
    if "TorchScript" in msg:
        return "unsafe", "it is a TorchScript archive (torch.jit.save), not a state_dict"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return "damaged", f"cannot read it: {e.strerror or e}"
    if not head:
        return "not", "the file is empty"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip archive
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "damaged", "a broken zip archive, probably cut short"
        if not any(n.endswith("data.pkl") for n in names):
            return "not", "a zip archive without the data.pkl that torch.save writes"
        return "damaged", _first_sentence(msg) or type(exc).__name__
    if head.startswith(b"\x80\x02\x8a\x0a"):  # torch.save's legacy format: a pickle opening with its magic number
        if isinstance(exc, EOFError) or not msg:
            return "damaged", "the file ends early, probably cut short"
        return "damaged", _first_sentence(msg) or type(exc).__name__
    if head[0] == 0x80:
        return "not", "a pickle that torch.save did not write"
    return "not", f"neither torch.save's zip archive nor a pickle; it starts with {head[:8]!r}"


def _load_checkpoint(builder, path: Path) -> nn.Module:  # type: ignore[no-untyped-def]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {path} not found; check the --weights path") from None
    except IsADirectoryError:
        raise WeightsError(f"checkpoint {path} is a folder, not a file; pass the .pth file in it to --weights") from None
    except Exception as exc:  # weights_only refuses arbitrary objects; empty, foreign and corrupt files fail here too
        kind, reason = _load_failure(path, exc)
        if kind == "unsafe":
            raise WeightsError(
                f"cannot load checkpoint {path} safely: {reason}; save the weights alone with "
                "torch.save(model.state_dict(), path)"
            ) from None
        if kind == "not":
            raise WeightsError(
                f"{path} is not a PyTorch checkpoint ({reason}); pass a file saved with torch.save(model.state_dict(), path)"
            ) from None
        raise WeightsError(
            f"checkpoint {path} is damaged ({reason}); copy it again, or save it again with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(obj, dict):
        for k in ("state_dict", "model", "model_state_dict"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"checkpoint {path} does not hold a state_dict of tensors; save model.state_dict()")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    try:
        model, result = build_loaded(builder, state)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise WeightsError(
            f"checkpoint {path} does not match the architecture ({str(exc).splitlines()[-1].strip()[:160]}); "
            "pass the MODEL the checkpoint was trained with"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"checkpoint {path} does not match the architecture: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:2]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]}); "
            "pass the MODEL the checkpoint was trained with"
        )
    return model


def _download(entry: object, name: str, cached: Path) -> None:
    """Fetch ``entry``'s file into torch's cache (a progress bar on stderr), or say in one line how to get it.

    torch.hub's own loader would print ``Downloading: "URL" to PATH`` before a download that then fails; done here,
    the one line the user sees is the error.
    """
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(entry.url, os.fspath(cached), progress=True)  # type: ignore[attr-defined]
    except (OSError, RuntimeError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise WeightsError(
            f"weights {entry} for {name} are not in the torch cache ({cached}) and could not be downloaded "
            f"({_first_sentence(str(exc) or type(exc).__name__)}); download {entry.url} to that path, "  # type: ignore[attr-defined]
            "pass --weights PATH.pth, or --weights random"
        ) from None


def _load_cached(cached: Path) -> dict[str, torch.Tensor]:
    """The state_dict in torch's cache (``weights_only=True``); a file there that does not load is reported as
    damaged, never replaced by random weights."""
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - empty, truncated, foreign or unsafe: all mean "fetch it again"
        reason = _load_failure(cached, exc)[1]
    else:
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return state
        reason = "it does not hold a state_dict of tensors"
    raise WeightsError(
        f"cached weights file {cached} is damaged ({reason}); delete it and run again to download it, "
        "or pass --weights PATH.pth"
    )


# torchvision's published DenseNet files predate its module names: ``denselayer1.norm.1.weight`` is the module
# ``denselayer1.norm1``'s weight (torchvision renames them when it loads them itself)
_DENSENET_OLD_KEY = re.compile(r"^(.*\.denselayer\d+\.(?:norm|relu|conv))\.([12]\..+)$")


def _published_names(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the keys of a published torchvision file renamed to the module names ``name`` has now."""
    if not name.startswith("densenet"):
        return state
    return {(m.group(1) + m.group(2) if (m := _DENSENET_OLD_KEY.match(k)) else k): v for k, v in state.items()}


def published_build_kwargs(name: str, entry: Any) -> dict[str, Any]:
    """The arguments torchvision's builder adds when it loads its own weights ``entry`` for ``name``, so the model
    computes what the published one does: GoogLeNet and Inception v3 rescale ImageNet-normalised input to [-1, 1]
    inside the model (``transform_input``; their weights were trained that way) and hold the auxiliary heads the
    files carry; a ViT is built at its weights' image size (384 or 518 for the SWAG weights, which resize the
    position embeddings)."""
    if name in ("googlenet", "inception_v3"):
        return {"transform_input": True, "aux_logits": True, "init_weights": False}
    if name.startswith("vit_"):
        return {"image_size": entry.meta["min_size"][0]}
    return {}


def load_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    allow_download: bool = True,
) -> LoadedBackbone:
    """Build ``name`` and load its weights, in eval mode on the CPU.

    Args:
        name: a registered backbone (``cnnbase models list``).
        weights: ``None``/``"DEFAULT"`` or a torchvision weights name (``"IMAGENET1K_V1"``), a local checkpoint
            path (loaded with ``weights_only=True``), or ``"random"`` (only when asked for; recorded as such).
        seed: the seed of random initialisation (``weights="random"``).
        allow_download: fetch missing torchvision weights into torch's cache; when False, or when offline,
            missing weights raise a one-line :class:`WeightsError` saying how to fix it.
    """
    spec = BACKBONES.get(name)
    w = os.fspath(weights) if weights is not None else None
    preprocess = spec.preprocess
    if w is not None and w.lower() == "random":
        torch.manual_seed(seed)
        model = spec.builder()
        weights_id = f"random:seed={seed}"
    elif w is not None and (os.sep in w or w.endswith((".pth", ".pt", ".bin", ".ckpt")) or Path(w).is_file()):
        path = Path(w).expanduser()
        torch.manual_seed(seed)
        model = _load_checkpoint(spec.builder, path)
        weights_id = f"file:sha256:{file_sha256(path)}"
    else:
        if spec.weights_enum is None:
            raise WeightsError(
                f"{name} has no published weights; pass --weights random (a test backbone) or --weights PATH.pth"
            )
        tag = w or "DEFAULT"
        try:
            entry = spec.weights_enum[tag]
        except KeyError:
            options = ", ".join(spec.weights_enum.__members__)
            raise WeightsError(f"{name} has no weights {tag!r}; choose one of {options}, a .pth path, or random") from None
        cached = weights_cache_path(entry)
        if not cached.is_file():
            if not allow_download:
                raise WeightsError(
                    f"weights {entry} for {name} are not in the torch cache ({cached}); download {entry.url} to that "
                    "path on a machine with internet, pass --weights PATH.pth, or --weights random to use random weights"
                )
            _download(entry, name, cached)
        try:
            builder = partial(spec.builder, **published_build_kwargs(name, entry))
            model, result = build_loaded(builder, _published_names(name, _load_cached(cached)))
        except RuntimeError as exc:  # a tensor of the wrong shape
            raise WeightsError(
                f"weights {entry} do not fit {name} ({_first_sentence(str(exc).strip().rsplit(chr(10), 1)[-1], 160)}); "
                f"delete {cached} "
                "so that it is downloaded again"
            ) from None
        if result.missing_keys or result.unexpected_keys:
            raise WeightsError(
                f"weights {entry} do not fit {name}: {len(result.missing_keys)} missing keys, "
                f"{len(result.unexpected_keys)} unexpected; delete {cached} so that it is downloaded again"
            )
        weights_id = f"torchvision:{entry}"
        preprocess = preprocess_from_weights(entry)
    model.eval()
    return LoadedBackbone(spec=spec, model=model, weights_id=weights_id, preprocess=preprocess)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, optionally filtered by an fnmatch pattern."""
    return BACKBONES.list(pattern)


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "LayerTap",
    "LoadedBackbone",
    "Preprocess",
    "is_cached",
    "list_backbones",
    "load_backbone",
    "weights_cache_path",
]
