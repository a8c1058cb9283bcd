"""Every torchvision classification model as a backbone, with classic layer aliases.

Aliases (``cnnbase models layers MODEL`` lists them with the raw graph nodes):

* AlexNet / VGG: ``convN`` = output of the N-th convolution *after* its ReLU (VGG: ``convB`` is the last
  convolution of block B and ``convB_I`` the I-th of that block), ``poolN`` = max-pooling after conv N / block N,
  ``fc6``, ``fc7`` = the fully connected layers *after* ReLU (Caffe's in-place ReLU made the blob called ``fc6``
  post-ReLU; that is what "fc6 features" meant in 2014), ``fc6_pre``, ``fc7_pre`` = before ReLU, ``fc8`` = logits.
* ResNet-style (resnet, resnext, wide_resnet): ``conv1`` (stem after ReLU), ``layer1`` … ``layer4`` (stage outputs),
  ``pool`` (the global-average-pooled vector, 512/2048-d), ``fc`` (logits).
* Every model: ``pool`` = the input of the final linear classifier (the "penultimate" vector), ``logits``.
"""

from __future__ import annotations

import functools
from typing import Any

import torchvision
from torch import fx, nn
from torchvision.models import feature_extraction

from ..registry import Registry
from .spec import BackboneSpec, LayerTap, Preprocess

BACKBONES: Registry[BackboneSpec] = Registry("backbone")

_INTERP = {"InterpolationMode.BILINEAR": "bilinear", "InterpolationMode.BICUBIC": "bicubic", "InterpolationMode.NEAREST": "nearest"}


def preprocess_from_weights(weights: Any) -> Preprocess:
    """The evaluation transform a torchvision weights entry declares, as a :class:`Preprocess`."""
    t = weights.transforms()
    return Preprocess(
        mode="center_crop",
        resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        mean=tuple(float(x) for x in t.mean),
        std=tuple(float(x) for x in t.std),
        interpolation=_INTERP.get(str(t.interpolation), "bilinear"),
        antialias=bool(getattr(t, "antialias", True)),
    )


def _family(name: str) -> str:
    if name == "alexnet":
        return "alexnet"
    if name.startswith("vgg"):
        return "vgg"
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return "resnet"
    return "generic"


def _sequential_aliases(model: nn.Module, vgg: bool) -> dict[str, LayerTap]:
    """Walk AlexNet/VGG-style ``features`` and ``classifier`` Sequentials and name their outputs."""
    taps: dict[str, LayerTap] = {}
    conv = block = in_block = 0
    last_conv_node = None
    mods = list(model.features.named_children())
    for i, (idx, m) in enumerate(mods):
        node = f"features.{idx}"
        if isinstance(m, nn.Conv2d):
            conv += 1
            in_block += 1
            nxt = mods[i + 1][1] if i + 1 < len(mods) else None
            relu_node = f"features.{mods[i + 1][0]}" if isinstance(nxt, nn.ReLU) else node
            last_conv_node = relu_node
            label = f"conv{block + 1}_{in_block}" if vgg else f"conv{conv}"
            taps[label] = LayerTap(label, relu_node, f"convolution {conv} ({m.out_channels} channels), after ReLU")
        elif isinstance(m, nn.MaxPool2d):
            block += 1
            n = block if vgg else conv
            if vgg and last_conv_node:
                taps[f"conv{n}"] = LayerTap(f"conv{n}", last_conv_node, f"last convolution of block {n}, after ReLU")
            taps[f"pool{n}"] = LayerTap(f"pool{n}", node, f"max-pooling after {'block' if vgg else 'conv'} {n}")
            in_block = 0
    fc = 5
    cls = list(model.classifier.named_children())
    for i, (idx, m) in enumerate(cls):
        if isinstance(m, nn.Linear):
            fc += 1
            node = f"classifier.{idx}"
            nxt = cls[i + 1][1] if i + 1 < len(cls) else None
            if isinstance(nxt, nn.ReLU):
                relu = f"classifier.{cls[i + 1][0]}"
                taps[f"fc{fc}"] = LayerTap(f"fc{fc}", relu, f"fully connected {fc} ({m.out_features}-d), after ReLU")
                taps[f"fc{fc}_pre"] = LayerTap(f"fc{fc}_pre", node, f"fully connected {fc} ({m.out_features}-d), before ReLU")
            else:
                taps[f"fc{fc}"] = LayerTap(f"fc{fc}", node, f"fully connected {fc} ({m.out_features}-d): the logits")
    return taps


def eval_graph(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, str]]:
    """``model``'s eval-mode FX graph, traced as torchvision's feature extraction traces it, with each node's name.

    The names are those of ``get_graph_node_names`` and ``create_feature_extractor`` (``heads.head``,
    ``encoder.layers.encoder_layer_11.add_1``, ``getitem_5``), not FX's own ``node.name`` (``getitem_29``), which
    counts every op of the whole trace, nor ``node.target``, which misses the ``_1`` of a module called twice.
    """
    # the tracer settings get_graph_node_names uses (torchvision ops as leaves): the same settings, the same names
    defaults = getattr(feature_extraction, "_set_default_tracer_kwargs", None)
    tracer = feature_extraction.NodePathTracer(**(defaults(None) if defaults is not None else {}))
    was_training = model.training
    try:
        graph = tracer.trace(model.eval())
    finally:
        model.train(was_training)
    return graph, dict(tracer.node_to_qualname)


def penultimate_node(model: nn.Module) -> tuple[str, str]:
    """(node feeding the final classifier op, final node) of the eval graph, found by FX tracing.

    Both are names that ``create_feature_extractor`` accepts (they are in ``get_graph_node_names(model)[1]``).
    """
    graph, names = eval_graph(model)
    eval_nodes = list(names.values())
    last = eval_nodes[-1]
    out = [n for n in graph.nodes if n.op == "output"][0]
    node = out.args[0]
    while isinstance(node, (tuple, list)) and node:  # a model returning several outputs: the first is the logits
        node = node[0]
    while isinstance(node, fx.Node) and node.op != "placeholder":
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), nn.Linear):
            prev = args[0]
            # skip eval-time identities (dropout) so the tap is the pooled vector itself
            while prev.op == "call_module" and isinstance(model.get_submodule(prev.target), nn.Dropout):
                prev = [a for a in prev.args if isinstance(a, fx.Node)][0]
            if prev in names:
                return names[prev], last
            break
        if not args:
            break
        node = args[0]
    return eval_nodes[-2], last


def compute_aliases(spec: BackboneSpec, model: nn.Module) -> dict[str, LayerTap]:
    """All named taps of ``model`` (classic aliases for the family, plus ``pool`` and ``logits``)."""
    taps: dict[str, LayerTap] = {}
    if spec.family in ("alexnet", "vgg") and hasattr(model, "features") and hasattr(model, "classifier"):
        taps.update(_sequential_aliases(model, vgg=spec.family == "vgg"))
    if spec.family == "resnet":
        taps["conv1"] = LayerTap("conv1", "relu", "stem convolution after batch-norm and ReLU")
        for i in range(1, 5):
            taps[f"layer{i}"] = LayerTap(f"layer{i}", f"layer{i}", f"output of residual stage {i}")
    pool, last = penultimate_node(model)
    taps.setdefault("pool", LayerTap("pool", pool, "input of the final classifier (global pooled vector)"))
    taps.setdefault("logits", LayerTap("logits", last, "class scores of the source task"))
    if spec.family == "resnet":
        taps["fc"] = LayerTap("fc", last, "class scores of the source task (the fc layer)")
    return taps


def _register_torchvision() -> None:
    for name in torchvision.models.list_models(module=torchvision.models):
        try:
            enum = torchvision.models.get_model_weights(name)
        except (ValueError, KeyError):
            enum = None
        family = _family(name)
        default = "fc6" if family in ("alexnet", "vgg") else "pool"
        pre = preprocess_from_weights(enum.DEFAULT) if enum is not None else Preprocess()
        BACKBONES.register(
            name,
            BackboneSpec(
                name=name,
                builder=functools.partial(torchvision.models.get_model, name, weights=None),
                weights_enum=enum,
                preprocess=pre,
                default_layer=default,
                family=family,
            ),
        )


_register_torchvision()
