"""Few-shot fine-tuning: the whole network plus a 1x1x1 head, Dice+CE, cosine schedule,
model selection on a validation volume, sliding-window prediction.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from synthvox.train.model import size_divisor

from .data import Prepared, crop_shape, sample_crops
from .protocol import FewshotProtocol

__all__ = ["FewshotNet", "lr_at", "finetune", "predict", "mean_dice"]


class FewshotNet(nn.Module):
    """backbone (B, 1, D, H, W) -> (B, C, D, H, W) features, then a 1x1x1 conv to class logits."""

    def __init__(self, backbone: nn.Module, feature_channels: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        # built without drawing from the global RNG; callers initialise it from a generator
        self.head = nn.utils.skip_init(nn.Conv3d, feature_channels, n_classes, kernel_size=1)

    @property
    def divisor(self) -> int:
        return size_divisor(self.backbone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def lr_at(step: int, protocol: FewshotProtocol) -> float:
    """Cosine schedule from `protocol.lr` at step 0 down to 0 at `protocol.steps`."""
    return 0.5 * protocol.lr * (1.0 + math.cos(math.pi * min(step, protocol.steps) / protocol.steps))


def mean_dice(pred: np.ndarray, gt: np.ndarray, labels: list[int]) -> float:
    """Mean Dice over `labels` present in either map (model selection only; NaN if none)."""
    vals = []
    for k in labels:
        p, g = pred == k, gt == k
        denom = int(p.sum()) + int(g.sum())
        if denom:
            vals.append(2.0 * int((p & g).sum()) / denom)
    return float(np.mean(vals)) if vals else float("nan")


@torch.no_grad()
def predict(net: FewshotNet, image: np.ndarray, csize: tuple[int, int, int], overlap: float, device: torch.device) -> np.ndarray:
    """Label map (D, H, W) int64 by sliding window (Gaussian blending) of `csize` windows."""
    from monai.inferers import sliding_window_inference  # lazily: ~5 s and ~180 MB of startup

    was_training = net.training
    net.eval()
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
    with _autocast(device):
        logits = sliding_window_inference(x, list(csize), 1, net, overlap=overlap, mode="gaussian")
    net.train(was_training)
    return logits.argmax(1)[0].to("cpu", torch.int64).numpy()


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def finetune(
    net: FewshotNet,
    support: list[Prepared],
    val: Prepared | None,
    n_classes: int,
    protocol: FewshotProtocol,
    rng: np.random.Generator,
    device: torch.device,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune `net` in place on random crops of `support`; keep the best validation state.

    Validation (mean foreground Dice on `val`, protocol grid) every `val_every` steps and at the
    end; without `val` the last state is kept. Returns a summary (losses, validation curve,
    selected step, seconds, crop size).
    """
    from monai.losses import DiceCELoss  # lazily: ~5 s and ~180 MB of startup

    if not support or any(v.label is None for v in support):
        raise ValueError("few-shot fine-tuning needs labelled support volumes")
    shape = tuple(max(v.image.shape[a] for v in support) for a in range(3))
    csize = crop_shape(shape, protocol.crop, net.divisor)
    net.to(device).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=protocol.lr)
    fg = list(range(1, n_classes))
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    best = (-1.0, 0, None)  # (dice, step, state)
    t0 = time.perf_counter()
    for step in range(protocol.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, protocol)
        x, y = sample_crops(support, csize, protocol.batch, protocol.fg_fraction, rng)
        x, y = x.to(device), y.to(device)
        with _autocast(device):
            out = net(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if val is not None and (done % protocol.val_every == 0 or done == protocol.steps):
            d = mean_dice(predict(net, val.image, csize, protocol.overlap, device), val.label, fg)
            curve.append((done, d))
            if log:
                log(f"step {done}/{protocol.steps} loss {np.mean(losses[-protocol.val_every:]):.4f} val dice {d:.4f}")
            if math.isfinite(d) and d > best[0]:
                best = (d, done, copy.deepcopy(net.state_dict()))
        elif log and done % max(1, protocol.val_every) == 0:
            log(f"step {done}/{protocol.steps} loss {np.mean(losses[-protocol.val_every:]):.4f}")
    selected = protocol.steps
    if best[2] is not None:
        net.load_state_dict(best[2])
        selected = best[1]
    return {
        "train_seconds": time.perf_counter() - t0,
        "losses": losses,
        "val_curve": curve,
        "selected_step": selected,
        "selection": "best validation Dice" if val is not None else "last step (no spare labelled case for validation)",
        "crop": list(csize),
    }
