"""Gamma (contrast) change: rescale to [0, 1], raise to gamma, map back to the input range."""
from __future__ import annotations


import numpy as np
import torch

from ..workspace import TEMP_A, TEMP_B, scratch
from .config import AppearanceConfig
from .params import GammaParams

__all__ = ["sample_gamma", "apply_gamma"]


def sample_gamma(cfg: AppearanceConfig, rng: np.random.Generator) -> GammaParams | None:
    """gamma U(cfg.gamma) (MONAI's RandAdjustContrast), or None (p = 1 - gamma_p)."""
    if not rng.random() < cfg.gamma_p:
        return None
    return GammaParams(gamma=float(rng.uniform(cfg.gamma[0], cfg.gamma[1])))


def apply_gamma(volume: torch.Tensor, params: GammaParams | None, generator: torch.Generator | None = None,
                inplace: bool = False) -> torch.Tensor:
    """((x - min) / (max - min)) ** gamma * (max - min) + min; None or gamma 1 is the identity.
    `inplace` reuses the volume's memory."""
    if params is None or params.gamma == 1.0:
        return volume
    lo, hi = torch.aminmax(volume)
    span = (hi - lo).clamp(min=torch.finfo(volume.dtype).tiny)
    # (x - lo) / span lies in [0, 1] exactly (lo <= x <= hi and rounding is monotonic), so no
    # clamp is needed (with span clamped at `tiny`, x - lo <= hi - lo still holds)
    y = (volume.sub_(lo) if inplace else volume - lo).div_(span)
    # y ** gamma as exp(gamma * log y): torch's CPU pow rounds differently in its vectorised
    # body and scalar tail, so its bytes would depend on the thread count. log(0) is avoided:
    # MKL's vector log takes an error-handling path per zero (~50 ns each: 50 ms for a view
    # with a zero background); zeros become 1 (log 0, exp 1) and are multiplied back to 0 by
    # s = sign(y) in {0, 1}, the same bytes as exp(gamma * -inf) = 0; y > 0 is untouched.
    shape = tuple(y.shape)
    s = scratch(TEMP_A, shape, y.dtype, y.device) if inplace else torch.empty_like(y)
    t = scratch(TEMP_B, shape, y.dtype, y.device) if inplace else torch.empty_like(y)
    torch.sign(y, out=s)                           # 0 where y == 0, else 1
    torch.sub(s, 1.0, out=t).neg_()                # 1 where y == 0, else 0 (exact)
    y.add_(t).log_().mul_(params.gamma).exp_()  # y + 0 is exact
    y.mul_(s)                                      # zeros back to 0
    return y.mul_(span).add_(lo)
