"""Protocol cards (``tasks/*.yaml``): load and validate them, and run every dataset of a card, resumably.

A card pins what a paper did, per dataset (``tasks/razavian2014.yaml``: layer, preprocessing, jitter, classifier,
C, boxes, retrieval representation, PCA-whitening set, metric). :func:`run_card` runs each dataset of the card that
is present (a line per dataset that is not), reusing every finished stage: features come from the store, SVMs and
PCA-whitening are reloaded from the files saved next to the features, and a (dataset, variant) whose record is
already in the results file is not recomputed (``redo=True`` recomputes it from the cached stages).

Every record carries ``card = {name, hash, version, variant, deviations, settings, run_key}``: ``hash`` is the
sha256 of the card's canonical JSON (:func:`card_hash`), ``deviations`` lists each setting a run changed
(``"features.layer: fc6 → fc7"``); the leaderboard marks such rows ``*`` (not comparable with the reference rows).
Choosing a subset of datasets or variants is not a deviation.

Card schema (``protocol: offtheshelf``; ``protocol: transfer`` cards are Oquab-style, run by :mod:`cnnbase.transfer`):

* ``name``, ``version``, ``protocol``, ``title``, ``paper``, ``reference``, ``model``, ``open_choices``, ``notes``;
* ``features``: ``layer`` (a layer, or ``{family: layer, ..., default: layer}``), ``preprocess`` (``{mode: square,
  size: native|N, interpolation}``, ``{mode: center_crop, size: native}`` or a ``--preprocess`` string), ``precision``,
  ``dtype``;
* ``jitter``: ``name`` (``razavian``), ``crop_side``, ``rotations`` (must equal what cnnbase implements), ``train``,
  ``test``;
* ``svm``: ``c_selection`` (``paper`` | ``cv``), ``cv_grid``, ``cv_folds``, ``seed``;
* ``retrieval``: ``distance`` (``l2``), ``spatial`` {``reference_levels``, ``query_levels``, ``square``, ``fill``},
  ``jitter_views``, ``pca`` {``dim``, ``whiten``, ``power``};
* ``variants``: ``{name: {kind: svm, jitter, normalization, loss, solver}}`` or ``{name: {kind: retrieval, search:
  whole|spatial, whitening}}``;
* ``datasets``: ``{name (from datasets.yaml): {kind, variants, metric, [train_split, test_split, options, note], svm:
  mode, C, [difficult]; retrieval: representation (spatial|jitter), query (crop|whole), [whitening_set]}}``.

Example:
    >>> card = load_card("razavian2014")  # doctest: +SKIP
    >>> records = run_card(card, "alexnet", datasets=["voc2007"])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError, DatasetError

__all__ = [
    "apply_overrides",
    "card_hash",
    "cli_overrides",
    "deviations",
    "load_card",
    "resolve_layer",
    "resolve_preprocess",
    "run_card",
    "validate_card",
]

PROTOCOLS = ("offtheshelf", "transfer")
QUERY_BOX_ADAPTERS = ("oxford_paris", "revisited")  # readers whose queries carry a box (their ``query_box`` option)

# ---------------------------------------------------------------------------------------------------- loading


def load_card(card: str | os.PathLike[str], *, datasets: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read and validate a card: a path to a YAML file, or a name under ``tasks/`` (``"razavian2014"``).

    Args:
        card: file path or card name.
        datasets: the ``datasets.yaml`` the card's dataset names are checked against (default: the one in force).

    Returns:
        The card as a dict (``_path`` holds where it was read from; keys starting with ``_`` are not hashed).

    Raises:
        ConfigError: unreadable file or a schema error, as one line naming the key.
    """
    p = _card_path(card)
    from .config import read_yaml

    data = read_yaml(p)  # one line naming the file, and the line and column of a syntax error
    if not isinstance(data, dict):
        raise ConfigError(f"card {p}: expected a mapping at the top level, got {_show(data)}")
    if data.get("protocol") == "transfer":
        from .transfer import load_card as load_transfer

        return load_transfer(p)
    data["_path"] = str(p)
    validate_card(data, datasets=datasets, where=str(p))
    return data


def _card_path(card: str | os.PathLike[str]) -> Path:
    p = Path(card).expanduser()
    if p.is_file():
        return p
    if p.suffix in (".yaml", ".yml") or os.sep in str(card):
        raise ConfigError(f"card file {p} not found")
    from .config import resource_path

    try:
        return resource_path(f"tasks/{card}.yaml")
    except ConfigError:
        raise ConfigError(f"no protocol card {str(card)!r} (looked for tasks/{card}.yaml); pass a card file path") from None


def card_hash(card: Mapping[str, Any]) -> str:
    """sha256 (hex) of the card's canonical JSON (sorted keys, no whitespace), private ``_`` keys left out."""
    from .features.store import canonical_json

    clean = {k: v for k, v in card.items() if not str(k).startswith("_")}
    return hashlib.sha256(canonical_json(clean).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------- schema

Check = Callable[[Any, str, str], None]


def _show(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _err(where: str, path: str, msg: str) -> ConfigError:
    return ConfigError(f"card {where}: {path}: {msg}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str(v: Any, p: str, w: str) -> None:
    if not isinstance(v, str) or not v.strip():
        raise _err(w, p, f"expected a non-empty string, got {_show(v)}")


def _enum(*allowed: Any) -> Check:
    def check(v: Any, p: str, w: str) -> None:
        if v not in allowed:
            raise _err(w, p, f"expected one of {', '.join(map(str, allowed))}, got {_show(v)}")

    return check


def _pos(v: Any, p: str, w: str) -> None:
    if not _is_num(v) or v <= 0:
        raise _err(w, p, f"expected a positive number, got {_show(v)}")


def _int(lo: int, hi: int | None = None) -> Check:
    def check(v: Any, p: str, w: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise _err(w, p, f"expected an integer {rng}, got {_show(v)}")

    return check


def _num(v: Any, p: str, w: str) -> None:
    if not _is_num(v):
        raise _err(w, p, f"expected a number, got {_show(v)}")


def _bool(v: Any, p: str, w: str) -> None:
    if not isinstance(v, bool):
        raise _err(w, p, f"expected true or false, got {_show(v)}")


def _any(v: Any, p: str, w: str) -> None:
    return None


def _list(item: Check, *, nonempty: bool = True) -> Check:
    def check(v: Any, p: str, w: str) -> None:
        if not isinstance(v, list) or (nonempty and not v):
            raise _err(w, p, f"expected a {'non-empty ' if nonempty else ''}list, got {_show(v)}")
        for i, x in enumerate(v):
            item(x, f"{p}[{i}]", w)

    return check


def _mapping(schema: dict[str, tuple[bool, Check]]) -> Check:
    def check(v: Any, p: str, w: str) -> None:
        _check_mapping(v, p, schema, w)

    return check


def _map_of(item: Check, *, nonempty: bool = True) -> Check:
    def check(v: Any, p: str, w: str) -> None:
        if not isinstance(v, dict) or (nonempty and not v):
            raise _err(w, p, f"expected a {'non-empty ' if nonempty else ''}mapping, got {_show(v)}")
        for k, x in v.items():
            item(x, f"{p}.{k}", w)

    return check


def _check_mapping(v: Any, path: str, schema: dict[str, tuple[bool, Check]], where: str) -> None:
    if not isinstance(v, dict):
        raise _err(where, path or "(top level)", f"expected a mapping, got {_show(v)}")
    for k in v:
        if k not in schema and not (not path and str(k).startswith("_")):
            key = f"{path}.{k}" if path else str(k)
            raise _err(where, key, f"unknown key; allowed here: {', '.join(schema)}")
    for k, (required, check) in schema.items():
        key = f"{path}.{k}" if path else k
        if k not in v or v[k] is None:
            if required:
                raise _err(where, key, "required key is missing")
            continue
        check(v[k], key, where)


def _layer(v: Any, p: str, w: str) -> None:
    if isinstance(v, str):
        return _str(v, p, w)
    if not isinstance(v, dict) or "default" not in v:
        raise _err(w, p, f"expected a layer name or a mapping {{family: layer, ..., default: layer}}, got {_show(v)}")
    for k, x in v.items():
        _str(x, f"{p}.{k}", w)


def _preprocess(v: Any, p: str, w: str) -> None:
    from .backbones import Preprocess

    if isinstance(v, str):
        try:
            Preprocess().override(v)
        except ConfigError as exc:
            raise _err(w, p, str(exc)) from None
        return
    _check_mapping(
        v,
        p,
        {
            "mode": (True, _enum("square", "center_crop")),
            "size": (True, _size),
            "interpolation": (False, _enum("nearest", "bilinear", "bicubic")),
        },
        w,
    )
    if v["mode"] == "center_crop" and v["size"] != "native":
        raise _err(w, f"{p}.size", "center_crop takes the weights' own resize/crop: use size: native, or a string 'center_crop:RESIZE:CROP'")


def _size(v: Any, p: str, w: str) -> None:
    if v != "native" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
        raise _err(w, p, f"expected 'native' or a positive integer, got {_show(v)}")


def _metric(v: Any, p: str, w: str) -> None:
    from .metrics import METRICS

    _str(v, p, w)
    if v not in METRICS.list():
        raise _err(w, p, f"unknown metric {v!r}; registered: {', '.join(METRICS.list())}")


_FEATURES = {
    "layer": (True, _layer),
    "preprocess": (True, _preprocess),
    "precision": (False, _enum("fp32", "bf16", "fp16")),
    "dtype": (False, _enum("float32", "float16")),
}
_JITTER = {
    "name": (True, _enum("razavian")),
    "crop_side": (True, _pos),
    "rotations": (True, _list(_num, nonempty=False)),
    "train": (False, _enum("all_views")),
    "test": (False, _enum("sum_scores")),
}
_SVM = {
    "c_selection": (True, _enum("paper", "cv")),
    "cv_grid": (False, _list(_pos)),
    "cv_folds": (False, _int(2)),
    "seed": (False, _int(0)),
}
_RETRIEVAL = {
    "distance": (False, _enum("l2")),
    "spatial": (
        True,
        _mapping(
            {
                "reference_levels": (True, _int(1, 10)),
                "query_levels": (True, _int(1, 10)),
                "square": (False, _enum("smallest")),
                "fill": (False, _enum("mean")),
            }
        ),
    ),
    "jitter_views": (True, _int(1, 16)),
    "pca": (True, _mapping({"dim": (True, _int(1)), "whiten": (True, _bool), "power": (True, _pos)})),
}
_VARIANT_SVM = {
    "kind": (True, _enum("svm")),
    "jitter": (True, _enum("none", "razavian")),
    "normalization": (True, _enum("l2", "l2+power2", "none")),
    "loss": (True, _enum("hinge", "squared_hinge")),
    "solver": (True, _enum("auto", "liblinear", "torch")),
}
_VARIANT_RETRIEVAL = {
    "kind": (True, _enum("retrieval")),
    "search": (True, _enum("whole", "spatial")),
    "whitening": (True, _bool),
}
_DATASET_COMMON = {
    "kind": (True, _enum("svm", "retrieval")),
    "variants": (True, _list(_str)),
    "metric": (True, _metric),
    "train_split": (False, _str),
    "test_split": (False, _str),
    "options": (False, _map_of(_any, nonempty=False)),
    "note": (False, _str),
}
_DATASET_SVM = {
    **_DATASET_COMMON,
    "mode": (True, _enum("ovr", "ovo")),
    "C": (True, _pos),
    "difficult": (False, _enum("ignore", "negative")),
}
_DATASET_RETRIEVAL = {
    **_DATASET_COMMON,
    "representation": (True, _enum("spatial", "jitter")),
    "query": (True, _enum("crop", "whole")),
    "whitening_set": (False, _str),
}
_TOP = {
    "name": (True, _str),
    "version": (False, _int(0)),
    "protocol": (True, _enum(*PROTOCOLS)),
    "title": (False, _str),
    "paper": (False, _str),
    "reference": (False, _str),
    "model": (False, _str),
    "features": (True, _mapping(_FEATURES)),
    "jitter": (False, _mapping(_JITTER)),
    "svm": (False, _mapping(_SVM)),
    "retrieval": (False, _mapping(_RETRIEVAL)),
    "variants": (True, _map_of(_any)),
    "datasets": (True, _map_of(_any)),
    "open_choices": (False, _map_of(_any, nonempty=False)),
    "notes": (False, _list(_str, nonempty=False)),
}


def validate_card(card: Mapping[str, Any], *, datasets: str | os.PathLike[str] | None = None, where: str | None = None) -> None:
    """Check a card's schema and cross-references; raise a one-line :class:`ConfigError` naming the bad key.

    Args:
        card: the parsed card.
        datasets: the ``datasets.yaml`` whose names the card's datasets must be (default: the one in force).
        where: how to name the card in messages (default: its ``name``).
    """
    from .config import load_dataset_configs
    from .metrics import METRICS

    w = where or (str(card.get("name", "?")) if isinstance(card, Mapping) else "?")
    _check_mapping(card, "", _TOP, w)
    if card["protocol"] != "offtheshelf":
        raise _err(w, "protocol", "this loader runs 'offtheshelf' cards; transfer cards are read by cnnbase.transfer")
    for v, spec in card["variants"].items():
        kind = spec.get("kind") if isinstance(spec, dict) else None
        schema = _VARIANT_SVM if kind == "svm" else _VARIANT_RETRIEVAL if kind == "retrieval" else None
        if schema is None:
            raise _err(w, f"variants.{v}.kind", f"expected svm or retrieval, got {_show(kind)}")
        _check_mapping(spec, f"variants.{v}", schema, w)
    kinds = {v: s["kind"] for v, s in card["variants"].items()}
    if any(s.get("jitter", "none") != "none" for s in card["variants"].values() if s["kind"] == "svm") and "jitter" not in card:
        raise _err(w, "jitter", "required key is missing (a variant uses jitter)")
    if "jitter" in card:
        _check_jitter(card["jitter"], w)
    configs = load_dataset_configs(datasets)
    for name, spec in card["datasets"].items():
        p = f"datasets.{name}"
        if name not in configs:
            raise _err(w, p, f"not a dataset of datasets.yaml ({', '.join(sorted(configs))})")
        kind = spec.get("kind") if isinstance(spec, dict) else None
        schema = _DATASET_SVM if kind == "svm" else _DATASET_RETRIEVAL if kind == "retrieval" else None
        if schema is None:
            raise _err(w, f"{p}.kind", f"expected svm or retrieval, got {_show(kind)}")
        _check_mapping(spec, p, schema, w)
        for i, v in enumerate(spec["variants"]):
            if v not in kinds:
                raise _err(w, f"{p}.variants[{i}]", f"unknown variant {v!r}; the card defines {', '.join(kinds)}")
            if kinds[v] != kind:
                raise _err(w, f"{p}.variants[{i}]", f"variant {v!r} is a {kinds[v]} variant, but {name} is a {kind} dataset")
        mkind = METRICS.get(spec["metric"]).kind
        task = configs[name].task
        if kind == "retrieval":
            if task != "retrieval":
                raise _err(w, f"{p}.kind", f"{name} is a {task} dataset, not a retrieval one")
            if mkind != "retrieval":
                raise _err(w, f"{p}.metric", f"{spec['metric']} does not score retrieval")
            if spec["metric"] != configs[name].metric:  # each reads its own benchmark's ground-truth layout
                raise _err(w, f"{p}.metric", f"{name} is scored with {configs[name].metric} (datasets.yaml), not {spec['metric']}")
            if spec["query"] == "crop" and configs[name].adapter not in QUERY_BOX_ADAPTERS:
                raise _err(w, f"{p}.query", f"{name} has no query boxes to crop to; use whole")
            if "retrieval" not in card:
                raise _err(w, "retrieval", f"required key is missing ({name} is a retrieval dataset)")
            if any(card["variants"][v]["whitening"] for v in spec["variants"]):
                ws = spec.get("whitening_set")
                if not ws:
                    raise _err(w, f"{p}.whitening_set", "required key is missing (a variant learns PCA-whitening: name an independent set)")
                if ws == name:
                    raise _err(w, f"{p}.whitening_set", "must be another dataset than the one evaluated (an independent set)")
                if ws not in configs or configs[ws].task != "retrieval":
                    raise _err(w, f"{p}.whitening_set", f"{ws!r} is not a retrieval dataset of datasets.yaml")
        else:
            if task == "retrieval":
                raise _err(w, f"{p}.kind", f"{name} is a retrieval dataset, not an svm one")
            want = "classification" if task == "classification" else "multilabel"
            if mkind != want:
                raise _err(w, f"{p}.metric", f"{spec['metric']} is a {mkind} metric but {name} is a {task} dataset")
            if spec["mode"] == "ovo" and task != "classification":
                raise _err(w, f"{p}.mode", f"one-vs-one needs one class per image; {name} is {task}: use ovr")
            if "svm" not in card:
                raise _err(w, "svm", f"required key is missing ({name} trains SVMs)")
    svm = card.get("svm") or {}
    if svm.get("c_selection") == "cv" and not svm.get("cv_grid"):
        raise _err(w, "svm.cv_grid", "required key is missing (c_selection is cv)")


def _check_jitter(j: Mapping[str, Any], w: str) -> None:
    from .features.views import JitterSpec

    spec = JitterSpec.parse(j["name"])
    if abs(float(j["crop_side"]) - spec.crop_side) > 1e-9:
        raise _err(w, "jitter.crop_side", f"cnnbase's {spec.name} jitter uses crop_side {spec.crop_side!r} (4/9 of the area), got {j['crop_side']!r}")
    if [float(x) for x in j["rotations"]] != [float(x) for x in spec.rotations]:
        raise _err(w, "jitter.rotations", f"cnnbase's {spec.name} jitter rotates by {list(spec.rotations)} degrees, got {j['rotations']!r}")


# ---------------------------------------------------------------------------------------------------- overrides


def cli_overrides(
    card: Mapping[str, Any],
    *,
    layer: str | None = None,
    C: float | Sequence[float] | None = None,
    c_selection: str | None = None,
    preprocess: str | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``{dotted.path: value}`` overrides the ``cnnbase run`` options stand for.

    ``--layer`` → ``features.layer``; ``--preprocess`` → ``features.preprocess``; ``--C 0.5`` → the C of every SVM
    dataset; ``--C 0.1,1,10`` → ``svm.c_selection: cv`` with that ``svm.cv_grid``; ``--c-selection``;
    ``--set KEY=VALUE`` (VALUE read as YAML, e.g. ``--set retrieval.pca.dim=256``).
    """
    out: dict[str, Any] = {}
    if layer is not None:
        out["features.layer"] = layer
    if preprocess is not None:
        out["features.preprocess"] = preprocess
    if C is not None:
        if isinstance(C, (int, float)):
            for name, spec in (card.get("datasets") or {}).items():
                if isinstance(spec, dict) and spec.get("kind") == "svm":
                    out[f"datasets.{name}.C"] = float(C)
        else:
            out["svm.c_selection"] = "cv"
            out["svm.cv_grid"] = [float(c) for c in C]
    if c_selection is not None:
        out["svm.c_selection"] = c_selection
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set {item!r}; use --set KEY=VALUE, e.g. --set retrieval.pca.dim=256")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"bad --set {item!r}: the value is not valid YAML") from None
    return out


def apply_overrides(card: Mapping[str, Any], overrides: Mapping[str, Any], *, datasets: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A validated copy of ``card`` with ``{dotted.path: value}`` overrides applied (unknown keys are errors)."""
    eff = copy.deepcopy(dict(card))
    for path, value in overrides.items():
        parts = path.split(".")
        node: Any = eff
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"override {path}: the card has no section {'.'.join(parts[: i + 1])!r}")
            node = node[part]
        node[parts[-1]] = value
    if overrides:
        validate_card(eff, datasets=datasets, where=f"{card.get('name', '?')} (with overrides {', '.join(overrides)})")
    return eff


def resolve_layer(card: Mapping[str, Any], bb: Any) -> str:
    """The card's layer for this backbone (per family, else ``default``), resolved to its alias."""
    spec = card["features"]["layer"]
    name = spec if isinstance(spec, str) else spec.get(bb.spec.family) or spec.get(bb.spec.name) or spec["default"]
    return bb.resolve_layer(name).name


def resolve_preprocess(card: Mapping[str, Any], bb: Any) -> str | None:
    """The ``--preprocess`` string the card means for this backbone (``size: native`` = the weights' input size)."""
    p = card["features"]["preprocess"]
    if isinstance(p, str):
        return p
    if p["mode"] == "center_crop":
        return p.get("interpolation")
    size = bb.preprocess.crop if p["size"] == "native" else int(p["size"])
    return f"square:{size}" + (f",{p['interpolation']}" if p.get("interpolation") else "")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if not prefix and str(k).startswith("_"):
                continue
            key = f"{prefix}.{k}" if prefix else str(k)
            if key in ("features.layer", "features.preprocess") or not isinstance(v, dict):
                out[key] = v
            else:
                out.update(_flatten(v, key))
    return out


def _short(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def deviations(card: Mapping[str, Any], eff: Mapping[str, Any], bb: Any = None) -> dict[str, str]:
    """``{path: "path: card value → used value"}`` for every setting of ``eff`` that differs from ``card``.

    With a backbone, the layer and the preprocessing are compared as resolved for it (``--layer fc6`` on AlexNet is
    what the card says, so no deviation).
    """
    a, b = _flatten(card), _flatten(eff)
    out: dict[str, str] = {}
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key), b.get(key)
        if bb is not None and key == "features.layer":
            old, new = resolve_layer(card, bb), resolve_layer(eff, bb)
        elif bb is not None and key == "features.preprocess":
            old, new = resolve_preprocess(card, bb), resolve_preprocess(eff, bb)
            if bb.preprocess.override(old) == bb.preprocess.override(new):
                continue
        if old != new:
            out[key] = f"{key}: {_short(old) if key in a else '(unset)'} → {_short(new) if key in b else '(unset)'}"
    return out


def _relevant(devs: Mapping[str, str], prefixes: Sequence[str]) -> list[str]:
    return [text for key, text in devs.items() if any(key == p.rstrip(".") or key.startswith(p) for p in prefixes)]


# ---------------------------------------------------------------------------------------------------- presence


def _needed_splits(ds: Any, spec: Mapping[str, Any]) -> list[str]:
    from .runner import train_test_splits

    if spec["kind"] == "retrieval":
        return ["query", "database"]
    return list(train_test_splits(ds, spec.get("train_split"), spec.get("test_split")))


def _adapter_options(name: str, spec: Mapping[str, Any], datasets_file: Any) -> dict[str, Any]:
    from .config import load_dataset_configs

    opts = dict(spec.get("options") or {})
    if load_dataset_configs(datasets_file)[name].adapter in QUERY_BOX_ADAPTERS and "query" in spec:
        opts["query_box"] = spec["query"] == "crop"
    return opts


def open_present(name: str, spec: Mapping[str, Any], *, datasets_file: Any = None, splits: Sequence[str] | None = None) -> tuple[Any, str]:
    """``(ImageSet, "")`` when the dataset's annotations and every image of the splits it needs are there, else
    ``(None, why)``. Uses the adapter (as training will) and the ``datasets verify`` helpers; decodes nothing."""
    from .config import load_dataset_configs
    from .datasets import open_dataset
    from .datasets.verify import count_missing, locate

    cfg = load_dataset_configs(datasets_file).get(name)
    if cfg is None:
        return None, "not in datasets.yaml"
    found, what = locate(cfg)
    if not found:
        return None, f"not found ({what}); see `cnnbase datasets download {name}`"
    try:
        ds = open_dataset(name, datasets=datasets_file, **_adapter_options(name, spec, datasets_file))
        needed = list(splits) if splits is not None else _needed_splits(ds, spec)
    except DatasetError as exc:
        return None, str(exc)
    if ds.meta.get("database_complete") is False:
        return None, f"the image folder was not found under {cfg.root} (only the ground-truth files)"
    for s in needed:
        if s not in ds.splits:
            return None, f"no split {s!r} (has {', '.join(ds.splits)})"
        missing = count_missing(ds, s)
        if missing:
            return None, f"{missing} of {len(ds.splits[s])} {s} images missing under {cfg.root}; see `cnnbase datasets verify {name}`"
    return ds, ""


# ---------------------------------------------------------------------------------------------------- running


def run_card(
    card: str | os.PathLike[str] | Mapping[str, Any],
    model: str | None = None,
    *,
    weights: str | None = None,
    datasets: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    opts: Any = None,
    store: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    datasets_file: str | os.PathLike[str] | None = None,
    ctx: Any = None,
    redo: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every dataset of ``card`` that is present (one line for each that is not), every variant, resumably.

    Args:
        card: a card name, path or already-loaded dict.
        model: backbone (default: the card's ``model``).
        weights: weights of the backbone (``None`` = its default pretrained weights; ``"random"``; a ``.pth``).
        datasets: only these datasets of the card (not a deviation).
        variants: only these variants (not a deviation).
        overrides: ``{dotted.path: value}`` changes to the card (see :func:`cli_overrides`), recorded as deviations.
        opts: a :class:`cnnbase.runner.FeatureOptions` for what does not change the numbers (batch size, workers,
            shard size, bad-image policy, compile, seed of random weights); its number-changing fields are set from
            the card.
        store: feature store folder. results: records file (default ``results/records.jsonl``).
        datasets_file: the ``datasets.yaml`` to read (default: the one in force).
        ctx: a :class:`cnnbase.runner.Context` (overrides ``store``/``results``).
        redo: recompute (dataset, variant) pairs whose record is already in the results file.
        log: called with one line per skipped dataset or reused record (default: stderr).

    Returns:
        The records, one per (dataset, variant) run or found done.
    """
    from .features.store import FeatureStore
    from .runner import Context, FeatureOptions

    say = log or _stderr
    c = ctx or Context(
        store=FeatureStore(store) if store is not None else Context().store,
        results=Path(results) if results is not None else None,
        datasets_file=os.fspath(datasets_file) if datasets_file is not None else None,
    )
    dfile = datasets_file if datasets_file is not None else c.datasets_file
    crd = dict(card) if isinstance(card, Mapping) else load_card(card, datasets=dfile)
    if crd.get("protocol") == "transfer":
        return _run_transfer(crd, model, weights, datasets, variants, overrides, c)
    if isinstance(card, Mapping):
        validate_card(crd, datasets=dfile)
    eff = apply_overrides(crd, overrides or {}, datasets=dfile)
    model = model or crd.get("model")
    if not model:
        raise ConfigError(f"card {crd['name']} pins no model; pass --model (e.g. alexnet, resnet50)")
    names = _select(list(eff["datasets"]), datasets, "dataset", crd["name"])
    chosen = _select(list(eff["variants"]), variants, "variant", crd["name"])
    base = opts or FeatureOptions()
    feats = eff["features"]
    fo = replace(
        base,
        weights=weights if weights is not None else base.weights,
        precision=feats.get("precision", "fp32"),
        dtype=feats.get("dtype", "float32"),
        jitter="none",
        pool="none",
    )
    bb = c.backbone(model, fo)
    fo = replace(fo, preprocess=resolve_preprocess(eff, bb))
    layer = resolve_layer(eff, bb)
    devs = deviations(crd, eff, bb)
    run = _Run(crd=crd, eff=eff, model=model, bb=bb, layer=layer, fo=fo, devs=devs, c=c, say=say, datasets_file=dfile)
    done = {} if redo else _done_records(c)
    out: list[dict[str, Any]] = []
    for name in names:
        spec = eff["datasets"][name]
        todo = [v for v in spec["variants"] if v in chosen]
        if not todo:
            continue
        ds, why = open_present(name, spec, datasets_file=dfile)
        if ds is None:
            say(f"skipped {name}: {why}")
            continue
        for v in todo:
            rec = run.one(name, ds, spec, v, done)
            if rec is not None:
                out.append(rec)
    return out


def _stderr(line: str) -> None:
    from .cli._console import err_console

    err_console.print(line, highlight=False, markup=False)


def _select(available: list[str], wanted: Sequence[str] | None, what: str, card: str) -> list[str]:
    if not wanted:
        return available
    unknown = [x for x in wanted if x not in available]
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a {what} of card {card}; choose from {', '.join(available)}")
    return [x for x in available if x in wanted]


def _done_records(c: Any) -> dict[str, dict[str, Any]]:
    from .results.records import DEFAULT_RESULTS, read_records

    p = Path(c.results) if c.results else DEFAULT_RESULTS
    if not p.is_file():
        return {}
    return {r["card"]["run_key"]: r for r in read_records(p) if isinstance(r.get("card"), dict) and r["card"].get("run_key")}


def _run_transfer(crd: dict[str, Any], model: Any, weights: Any, datasets: Any, variants: Any, overrides: Any, c: Any) -> list[dict[str, Any]]:
    from .transfer import run_card as run_transfer

    if variants or overrides:
        raise ConfigError(
            f"card {crd.get('name')} is a transfer card: --variant/--layer/--C/--set do not apply; use `cnnbase transfer evaluate` options"
        )
    extra = {"weights": weights} if weights is not None else {}
    return run_transfer(crd, model=model, datasets=datasets, ctx=c, **extra)


class _Run:
    """One card run: the resolved settings shared by every (dataset, variant)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self._opened: dict[str, Any] = {}
        self._dims: int | None = None

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def card_record(self, name: str, v: str, prefixes: list[str], settings: dict[str, Any], run_key: str) -> dict[str, Any]:
        return {
            "name": self.crd["name"],
            "hash": card_hash(self.crd),
            "version": self.crd.get("version"),
            "path": self.crd.get("_path"),
            "variant": v,
            "deviations": _relevant(self.devs, prefixes),
            "settings": settings,
            "run_key": run_key,
        }

    def run_key(self, name: str, v: str, prefixes: list[str], parts: dict[str, Any]) -> str:
        from .features.store import key_of

        return key_of(
            {
                "card": card_hash(self.crd),
                "deviations": _relevant(self.devs, prefixes),
                "dataset": name,
                "variant": v,
                "backbone": self.bb.name,
                "weights": self.bb.weights_id,
                "layer": self.layer,
                **parts,
            }
        )[:16]

    def one(self, name: str, ds: Any, spec: dict[str, Any], v: str, done: dict[str, Any]) -> dict[str, Any] | None:
        vspec = self.eff["variants"][v]
        if spec["kind"] == "svm":
            return self._svm(name, ds, spec, v, vspec, done)
        return self._retrieval(name, ds, spec, v, vspec, done)

    def _reuse(self, key: str, done: dict[str, Any], name: str, v: str) -> dict[str, Any] | None:
        if key in done:
            self.say(f"done {name} {v}: its record is already in the results file (run key {key}); pass --redo to recompute")
            return done[key]
        return None

    # -- SVM datasets --------------------------------------------------------------------------------------
    def _svm(self, name: str, ds: Any, spec: dict[str, Any], v: str, vspec: dict[str, Any], done: dict[str, Any]) -> dict[str, Any] | None:
        from .runner import SVMOptions, evaluate, train_test_splits

        s = self.eff["svm"]
        tr, te = train_test_splits(ds, spec.get("train_split"), spec.get("test_split"))
        C: float | tuple[float, ...] = float(spec["C"]) if s["c_selection"] == "paper" else tuple(float(x) for x in s["cv_grid"])
        svm = SVMOptions(
            mode=spec["mode"],
            C=C,
            cv_folds=int(s.get("cv_folds", 3)),
            loss=vspec["loss"],
            solver=vspec["solver"],
            difficult=spec.get("difficult", "ignore"),
            normalization=vspec["normalization"],
            seed=int(s.get("seed", 0)),
        )
        fo = replace(self.fo, jitter=vspec["jitter"])
        prefixes = ["features.", "svm.", f"variants.{v}.", f"datasets.{name}."] + (["jitter."] if vspec["jitter"] != "none" else [])
        settings = {
            "layer": self.layer,
            "preprocess": fo.preprocess,
            "jitter": {**self.eff["jitter"], "views": "all views train; SVM scores summed at test"} if vspec["jitter"] != "none" else "none",
            "normalization": vspec["normalization"],
            "mode": spec["mode"],
            "c_selection": s["c_selection"],
            "C": C,
            "loss": vspec["loss"],
            "solver": vspec["solver"],
            "difficult": svm.difficult,
            "dataset_options": _adapter_options(name, spec, self.datasets_file),
            "metric": spec["metric"],
        }
        key = self.run_key(name, v, prefixes, {"settings": settings, "splits": {x: ds.split_hash(x) for x in (tr, te)}})
        if (hit := self._reuse(key, done, name, v)) is not None:
            return hit
        return evaluate(
            self.model,
            ds,
            layer=self.layer,
            train_split=tr,
            test_split=te,
            metric=spec["metric"],
            opts=fo,
            svm=svm,
            normalization=vspec["normalization"],
            card=self.card_record(name, v, prefixes, settings, key),
            label=v,
            ctx=self.c,
        )

    # -- retrieval datasets --------------------------------------------------------------------------------
    def _retrieval(self, name: str, ds: Any, spec: dict[str, Any], v: str, vspec: dict[str, Any], done: dict[str, Any]) -> dict[str, Any] | None:
        R = self.eff["retrieval"]
        rep = spec["representation"] if vspec["search"] == "spatial" else "whole"
        prefixes = ["features.", "retrieval.", f"variants.{v}.", f"datasets.{name}."] + (["jitter."] if rep == "jitter" else [])
        wds = None
        if vspec["whitening"]:
            wname = spec["whitening_set"]
            wds, why = self._open_whitening(wname)
            if wds is None:
                self.say(f"skipped {name} {v}: its PCA-whitening set {wname} is not usable ({why})")
                return None
            self._check_pca_dim(R["pca"]["dim"])
            prefixes.append(f"datasets.{wname}.options")
        settings = {
            "layer": self.layer,
            "preprocess": self.fo.preprocess,
            "representation": rep,
            "query": spec["query"],
            "distance": R.get("distance", "l2"),
            "metric": spec["metric"],
            "dataset_options": _adapter_options(name, spec, self.datasets_file),
            "dataset_variant": ds.meta.get("variant"),
        }
        if rep == "spatial":
            settings["spatial"] = dict(R["spatial"])
        if rep == "jitter":
            settings["jitter"] = {**self.eff["jitter"], "views_used": int(R["jitter_views"])}
        if wds is not None:
            settings["whitening"] = {"set": wds.name, "split": "database", **R["pca"]}
        parts = {"settings": settings, "splits": {x: ds.split_hash(x) for x in ("query", "database")}}
        if wds is not None:
            parts["whitening_split"] = wds.split_hash("database")
        key = self.run_key(name, v, prefixes, parts)
        if (hit := self._reuse(key, done, name, v)) is not None:
            return hit
        body = self._retrieval_body(ds, spec, rep, wds)
        return self._record(ds, name, v, spec, rep, body, self.card_record(name, v, prefixes, settings, key))

    def _open_whitening(self, wname: str) -> tuple[Any, str]:
        if wname not in self._opened:
            spec = self.eff["datasets"].get(wname) or {"kind": "retrieval", "query": "whole"}
            self._opened[wname] = open_present(wname, spec, datasets_file=self.datasets_file, splits=["database"])
        return self._opened[wname]

    def _check_pca_dim(self, dim: int) -> None:
        if self._dims is None:
            from .backbones import LoadedBackbone
            from .features.extract import ModelRunner

            tap = self.bb.resolve_layer(self.layer)
            pre = self.bb.preprocess.override(self.fo.preprocess)
            lb = LoadedBackbone(spec=self.bb.spec, model=self.bb.model, weights_id=self.bb.weights_id, preprocess=pre)
            self._dims = ModelRunner(lb, {tap.name: tap.node}, precision=self.fo.precision, pool=self.fo.pool).dims[tap.name]
        if dim > self._dims:
            raise ConfigError(
                f"retrieval.pca.dim={dim} exceeds the {self._dims} dimensions of {self.bb.name} {self.layer}; "
                f"pass --set retrieval.pca.dim=N with N < {self._dims} (recorded as a deviation)"
            )

    def _features(self, ds: Any, split: str, rep: str) -> Any:
        """(array (n, d) or (n, V, d), valid, key) of ``split`` in representation ``rep``."""
        from .features.spatial import extract_patches
        from .runner import load_features

        R = self.eff["retrieval"]
        if rep == "spatial":
            lv = R["spatial"]["query_levels" if split == "query" else "reference_levels"]
            return extract_patches(self.model, ds, split=split, levels=lv, layer=self.layer, opts=self.fo, ctx=self.c)
        jit = "razavian" if rep == "jitter" else "none"
        return load_features(self.model, ds, split=split, layer=self.layer, opts=replace(self.fo, jitter=jit), ctx=self.c)

    def _views(self, rep: str, split: str) -> int | None:
        R = self.eff["retrieval"]
        if rep == "spatial":
            from .features.spatial import n_patches

            return n_patches(R["spatial"]["query_levels" if split == "query" else "reference_levels"])
        if rep == "jitter":
            return int(R["jitter_views"])
        return None

    def _retrieval_body(self, ds: Any, spec: dict[str, Any], rep: str, wds: Any) -> dict[str, Any]:
        from .heads.retrieval import (
            augment_pipeline,
            l2_normalize,
            rank,
            rank_distances,
            spatial_search_distance,
        )
        from .metrics import compute

        fd = self._features(ds, "database", rep)
        qmap = _query_in_database(ds)
        if qmap is not None:  # Holidays, UKBench: the queries are database images; their features are reused
            q_arr, q_valid, q_key = fd.array, fd.valid[qmap], f"{fd.key} (database rows)"
        else:
            fq = self._features(ds, "query", rep)
            q_arr, q_valid, q_key = fq.array, fq.valid, fq.key
        q_idx, d_idx = np.flatnonzero(q_valid), np.flatnonzero(fd.valid)
        q_rows = qmap[q_idx] if qmap is not None else q_idx
        pcaw, winfo = (None, None)
        if wds is not None:
            pcaw, winfo = self._whitening(wds, rep)
        R = self.eff["retrieval"]
        power = float(R["pca"]["power"])

        def tf(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float32)
            return augment_pipeline(x, pcaw, power) if pcaw is not None else l2_normalize(x)

        topk = 4 if spec["metric"] == "ukbench_score" else None  # N-S only reads the top 4
        if rep == "whole":
            q = _blockwise(q_arr, q_rows, None, tf)
            dvec = _blockwise(fd.array, d_idx, None, tf)
            ranks_local, _ = rank(q, dvec, topk=topk)
            head: dict[str, Any] = {"type": "l2-ranking", "vectors": "one per image"}
        else:
            Vq, Vd = self._views(rep, "query"), self._views(rep, "database")
            dist = np.empty((len(q_idx), len(d_idx)), np.float32)
            d_raw = int(fd.array.shape[-1])
            qblock = max(1, (256 << 20) // (4 * Vq * d_raw))  # queries transformed at a time (bounded memory)
            block = max(1, (64 << 20) // (4 * Vd * d_raw))  # database images streamed at a time
            for qs in range(0, len(q_rows), qblock):
                q = tf(np.asarray(q_arr[q_rows[qs : qs + qblock], :Vq], dtype=np.float32))
                for s in range(0, len(d_idx), block):
                    ids = d_idx[s : s + block]
                    x = tf(np.asarray(fd.array[ids, :Vd], dtype=np.float32))
                    dist[qs : qs + len(q), s : s + len(ids)] = spatial_search_distance(q, x)
            ranks_local, _ = rank_distances(dist, topk=topk)
            head = {
                "type": "spatial-search",
                "distance": "mean over query patches of the min L2 distance over the reference's patches",
                "query_vectors": Vq,
                "reference_vectors": Vd,
            }
        ranks = d_idx[ranks_local]
        gnd = [ds.queries[i] for i in q_idx]
        res = compute(spec["metric"], ranks=ranks, gnd=gnd)
        head["normalization"] = "l2 → PCA-whitening → l2 → signed power → l2" if pcaw is not None else "l2"
        if winfo is not None:
            head["whitening"] = winfo
        extra = {k: float(v) for k, v in res.extra.items()}
        if spec["metric"] == "ukbench_score":
            extra["recall_at_4_percent"] = float(res.value) * 25.0  # the paper's "recall at top four" in %
        per_query = None
        if res.per_item is not None:
            names = [ds.samples("query")[i].id for i in q_idx]
            per_query = {n: (None if np.isnan(x) else float(x)) for n, x in zip(names, res.per_item)}
        return {
            "split": "query",
            "database_split": "database",
            "value": float(res.value),
            "per_query": per_query,
            "extra": extra,
            "feature_keys": {"query": q_key, "database": fd.key},
            "extraction": fd.manifest.get("run"),
            "head": head,
            "n_queries": int(len(q_idx)),
            "n_database": int(len(d_idx)),
            "n_skipped": int((~q_valid).sum() + (~fd.valid).sum()),
        }

    def _whitening(self, wds: Any, rep: str) -> tuple[Any, dict[str, Any]]:
        """The PCA-whitening learned on the whitening set's database vectors (fitted once, saved, reloaded)."""
        from .features.store import key_of
        from .heads.retrieval import PCAWhitening, l2_normalize

        P = self.eff["retrieval"]["pca"]
        f = self._features(wds, "database", rep)
        V = self._views(rep, "database")
        idx = np.flatnonzero(f.valid)
        key = key_of({"features": f.key, "views": V, "input": "l2", "dim": P["dim"], "whiten": P["whiten"], "eps": 1e-9, "version": 1})
        entry_dir = Path(self.c.store.find(f.key).path)
        path = entry_dir / f"pcaw-{key[:12]}.npz"
        reused = path.is_file()
        if reused:
            pcaw = PCAWhitening.load(path)
        else:
            d = int(f.array.shape[-1])
            rows = len(idx) * (V or 1)
            tmp = None
            if rows * d * 4 <= (256 << 20):
                X = _blockwise(f.array, idx, V, l2_normalize).reshape(rows, d)
            else:  # larger than RAM allows comfortably: normalise into a temporary memmap next to the features
                tmp = entry_dir / f".pcaw-input-{os.getpid()}.npy"
                X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, d))
                _blockwise(f.array, idx, V, l2_normalize, out=X.reshape(len(idx), -1, d) if V else X)
                X.flush()
            try:
                pcaw = PCAWhitening().fit(X, dim=int(P["dim"]), whiten=bool(P["whiten"]), eps=1e-9)
            finally:
                del X
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
            pcaw.save(path)
        return pcaw, {
            "set": wds.name,
            "split": "database",
            "feature_key": f.key,
            "n_images": int(len(idx)),
            "n_vectors": int(pcaw.n_samples_),
            "dim": int(pcaw.dim),
            "whiten": bool(pcaw.whiten_),
            "power": float(P["power"]),
            "file": str(path),
            "reused": reused,
        }

    def _record(self, ds: Any, name: str, v: str, spec: dict[str, Any], rep: str, body: dict[str, Any], card: dict[str, Any]) -> dict[str, Any]:
        from .features.spatial import spatial_spec
        from .features.views import JitterSpec
        from .results.records import append_record, new_record

        pre = self.bb.preprocess.override(self.fo.preprocess)
        if rep == "spatial":
            R = self.eff["retrieval"]["spatial"]
            jitter = {"name": "spatial", "query": spatial_spec(R["query_levels"], pre), "reference": spatial_spec(R["reference_levels"], pre)}
        elif rep == "jitter":
            jitter = {**JitterSpec.parse("razavian").to_dict(), "views_used": int(self.eff["retrieval"]["jitter_views"])}
        else:
            jitter = JitterSpec.parse("none").to_dict()
        rec = new_record(
            dataset=ds.name,
            task="retrieval",
            backbone=self.bb.name,
            weights=self.bb.weights_id,
            layer=self.layer,
            node=self.bb.resolve_layer(self.layer).node,
            preprocess=pre.to_dict(),
            jitter=jitter,
            precision=self.fo.precision,
            pool=self.fo.pool,
            metric=spec["metric"],
            label=v,
            card=card,
            dataset_variant=ds.meta.get("variant"),
            **body,
        )
        append_record(rec, self.c.results)
        return rec


def _query_in_database(ds: Any) -> np.ndarray | None:
    """Database index of every query when each query is exactly a database sample (same id and box), else None."""
    db = {(s.id, s.box): i for i, s in enumerate(ds.samples("database"))}
    out = [db.get((s.id, s.box)) for s in ds.samples("query")]
    if any(i is None for i in out):
        return None
    return np.asarray(out, dtype=np.int64)


def _blockwise(arr: Any, idx: np.ndarray, views: int | None, fn: Callable[[np.ndarray], np.ndarray], *, out: Any = None, block_bytes: int = 64 << 20) -> np.ndarray:
    """``fn`` applied to ``arr[idx]`` (first ``views`` views) block by block, float32; into ``out`` if given."""
    per = int(np.prod(arr.shape[1:])) * 4
    block = max(1, block_bytes // max(1, per))
    parts = []
    for s in range(0, len(idx), block):
        ids = idx[s : s + block]
        x = np.asarray(arr[ids] if views is None else arr[ids, :views], dtype=np.float32)
        y = fn(x)
        if out is not None:
            out[s : s + len(ids)] = y
        else:
            parts.append(y)
    if out is not None:
        return out
    if not parts:
        shape = (0, *(arr.shape[1:] if views is None else (views, arr.shape[-1])))
        return np.zeros(shape, np.float32)
    return np.concatenate(parts)
