"""The adaptation layers of Oquab et al. 2014 and their training schedule.

Network (on top of the frozen layers' activations ``Y7``)::

    [optional: FC6 → ReLU → FC7 → ReLU, with AlexNet's dropouts, copied from the backbone and trained ("U")]
    [optional input dropout, off by default]
    FCa: Linear(d, 2048) → ReLU → Dropout(0.5)
    FCb: Linear(2048, classes + 1)            (softmax in the loss; the last output is "background")

Training (paper §4: "initial learning rate 0.01 ... train until the training cross-entropy stabilises, then divide
the rate by 10, and stop after three such iterations"): plain SGD on the cross-entropy, epochs over a fixed shuffled
training set. After each epoch the mean training loss of that epoch (dropout on, as the optimiser sees it) is
compared with the best epoch of the current stage; ``plateau_patience`` epochs in a row without a relative
improvement of ``plateau_tol`` make a plateau. At each plateau the rate is divided by 10; training stops at the
``plateaus``-th plateau (so with the defaults it runs at 0.01, 0.001 and 0.0001). ``max_epochs`` is a safety cap,
recorded when it ends a run.

Settings the paper does not give (cuda-convnet's ImageNet recipe by Krizhevsky et al. 2012, which the paper says
it follows): momentum 0.9, weight decay 5e-4 (on weights, not biases), mini-batches of 128, new layers initialised
from N(0, 0.01²) with zero biases. The plateau test (1% over 2 epochs) is cnnbase's choice. All are options and
are recorded.

Checkpoints: after every epoch the model, optimiser, schedule state and loss history are written atomically to
``checkpoint.pt``; a rerun of the same configuration resumes after the last finished epoch and ends with the same
weights as an uninterrupted run (each epoch's shuffle and dropout masks are seeded from (seed, epoch)). The
finished head is ``head.pt``; a rerun reuses it.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, StoreError
from ..features.store import atomic_write_bytes


@dataclass(frozen=True)
class HeadOptions:
    """Adaptation layers and SGD schedule (defaults: the paper where it says, cuda-convnet's recipe elsewhere)."""

    hidden: int = 2048
    dropout: float = 0.5
    input_dropout: float = 0.0
    init_std: float = 0.01
    finetune_fc67: bool = False
    lr: float = 0.01
    lr_factor: float = 0.1
    plateaus: int = 3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    plateau_tol: float = 0.01
    plateau_patience: int = 2
    max_epochs: int = 100

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.batch_size < 1 or self.max_epochs < 1 or self.plateaus < 1 or self.plateau_patience < 1:
            raise ConfigError("hidden size, batch size, max epochs, plateaus and patience must be positive")
        for name in ("dropout", "input_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1)")
        if not (self.lr > 0 and 0 < self.lr_factor < 1 and self.momentum >= 0 and self.weight_decay >= 0 and self.plateau_tol >= 0):
            raise ConfigError("need lr > 0, 0 < lr_factor < 1, momentum ≥ 0, weight_decay ≥ 0, plateau_tol ≥ 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AdaptationHead(nn.Module):
    """``[trunk] → [dropout] → FCa → ReLU → dropout → FCb`` (logits over classes + background)."""

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden: int = 2048,
        dropout: float = 0.5,
        input_dropout: float = 0.0,
        init_std: float = 0.01,
        trunk: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.trunk = trunk if trunk is not None else nn.Identity()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.fca = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fcb = nn.Linear(hidden, n_out)
        for lin in (self.fca, self.fcb):
            nn.init.normal_(lin.weight, 0.0, init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(self.trunk(x))
        return self.fcb(self.dropout(torch.relu(self.fca(x))))


def build_head(in_dim: int, n_out: int, opts: HeadOptions, trunk: nn.Module | None = None) -> AdaptationHead:
    """The head for ``in_dim`` inputs (with a trunk: the trunk's input size) and ``n_out`` outputs."""
    fc_in = in_dim
    if trunk is not None:
        lins = [m for m in trunk.modules() if isinstance(m, nn.Linear)]
        if not lins or lins[0].in_features != in_dim:
            raise ConfigError(f"the FC6/FC7 trunk expects {lins[0].in_features if lins else '?'} inputs, the cached features have {in_dim}")
        fc_in = lins[-1].out_features
    return AdaptationHead(
        fc_in, n_out, hidden=opts.hidden, dropout=opts.dropout, input_dropout=opts.input_dropout,
        init_std=opts.init_std, trunk=trunk,
    )


@dataclass
class FitResult:
    """A trained head and how its training went."""

    model: AdaptationHead
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    resumed_from: int = 0
    reused: bool = False
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.history)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("weight")]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("weight")]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def _save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file
        raise StoreError(f"cannot read {path} ({str(exc).splitlines()[0][:120]}); delete it to retrain") from None


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    n_out: int,
    opts: HeadOptions,
    *,
    seed: int = 0,
    trunk: nn.Module | None = None,
    out_dir: Path | None = None,
    key: str = "",
    device: str = "cpu",
    progress: Any = None,
    on_epoch: Any = None,
) -> FitResult:
    """Train (or resume, or reload) the adaptation head on patch activations ``x`` with labels ``y`` in ``[0, n_out)``.

    Args:
        x: ``(N, d)`` float16/float32 activations of the kept training patches.
        y: ``(N,)`` class indices, ``n_out - 1`` = background.
        out_dir: where ``checkpoint.pt`` and ``head.pt`` live (None: no checkpoints).
        key: the configuration's key, stored in and checked against the checkpoint.
        progress: a :class:`~cnnbase.transfer.progress.TrainProgress` (or None).
        on_epoch: ``on_epoch(record)`` after each finished epoch (tests use it to interrupt a run).
    """
    import time

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = build_head(x.shape[1], n_out, opts, trunk).to(device)
    done_path = out_dir / "head.pt" if out_dir else None
    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    if done_path is not None and done_path.is_file():
        st = _load(done_path)
        _check_key(st, key, done_path)
        model.load_state_dict(st["model"])
        model.eval()
        return FitResult(model.cpu(), st["history"], st["stopped"], reused=True)
    opt = torch.optim.SGD(_param_groups(model, opts.weight_decay), lr=opts.lr, momentum=opts.momentum)
    sched = {"epoch": 0, "lr": opts.lr, "plateaus": 0, "best": None, "bad": 0}
    history: list[dict[str, Any]] = []
    resumed_from = 0
    if ckpt_path is not None and ckpt_path.is_file():
        st = _load(ckpt_path)
        _check_key(st, key, ckpt_path)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched, history = dict(st["schedule"]), list(st["history"])
        resumed_from = int(sched["epoch"])
        if progress is not None:
            progress.note(f"resuming head training after epoch {resumed_from} ({ckpt_path})")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    n = len(y)
    if n == 0:
        raise ConfigError("no training patches: no positive or background patch survived the labelling rules")
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    steps = math.ceil(n / opts.batch_size)
    stopped = ""
    while True:
        if sched["epoch"] >= opts.max_epochs:
            stopped = "max_epochs"
            break
        e = sched["epoch"]
        for g in opt.param_groups:
            g["lr"] = sched["lr"]
        torch.manual_seed(seed * 1_000_003 + e)  # dropout masks of this epoch
        perm = torch.from_numpy(np.random.default_rng([seed, e]).permutation(n)).to(device)
        model.train()
        total = 0.0
        if progress is not None:
            progress.epoch(e + 1, steps, sched["lr"], f"{sched['plateaus']}/{opts.plateaus}")
        for s in range(steps):
            idx = perm[s * opts.batch_size : (s + 1) * opts.batch_size]
            xb = xt[idx].float()
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            (loss / len(idx)).backward()
            opt.step()
            total += float(loss.detach())
            if progress is not None:
                progress.step(total / min(n, (s + 1) * opts.batch_size))
        epoch_loss = total / n
        if not math.isfinite(epoch_loss):
            raise ConfigError(f"training diverged (loss {epoch_loss}) at epoch {e + 1}; lower --lr")
        sched["epoch"] = e + 1
        rec = {"epoch": e + 1, "lr": sched["lr"], "loss": epoch_loss}
        if sched["best"] is None or epoch_loss < sched["best"] * (1.0 - opts.plateau_tol):
            sched["best"], sched["bad"] = epoch_loss, 0
        else:
            sched["bad"] += 1
        finished = False
        if sched["bad"] >= opts.plateau_patience:
            sched["plateaus"] += 1
            rec["plateau"] = sched["plateaus"]
            if sched["plateaus"] >= opts.plateaus:
                finished = True
            else:
                sched["lr"] = opts.lr * opts.lr_factor ** sched["plateaus"]
                sched["best"], sched["bad"] = epoch_loss, 0
        history.append(rec)
        if finished:
            stopped = "schedule"
            break
        if ckpt_path is not None:
            _save(ckpt_path, {"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched, "history": history})
        if on_epoch is not None:
            on_epoch(rec)
    model.eval()
    if done_path is not None:
        _save(done_path, {"key": key, "model": model.state_dict(), "history": history, "stopped": stopped})
        if ckpt_path is not None and ckpt_path.is_file():
            ckpt_path.unlink()
    return FitResult(model.cpu(), history, stopped, resumed_from=resumed_from, seconds=time.perf_counter() - t0)


def _check_key(state: dict[str, Any], key: str, path: Path) -> None:
    if key and state.get("key") != key:
        raise StoreError(f"{path} belongs to another configuration (key mismatch); delete it to retrain")


@torch.inference_mode()
def predict_proba(model: nn.Module, x: np.ndarray, *, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
    """Softmax outputs ``(N, n_out)`` float32 of ``model`` (eval mode) on ``x``, read in chunks (``x`` may be a memmap)."""
    model = model.to(device).eval()
    out = []
    for a in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.array(x[a : a + batch_size], dtype=np.float32)).to(device)
        out.append(torch.softmax(model(xb), dim=1).float().cpu().numpy())
    if not out:
        n_out = model.fcb.out_features if hasattr(model, "fcb") else 0  # type: ignore[union-attr]
        return np.zeros((0, n_out), np.float32)
    return np.concatenate(out)
