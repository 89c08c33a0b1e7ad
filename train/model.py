"""The 3D UNet of the reference method, configurable, with intermediate activations ("taps").

Reference network (the default): widths 16-32-64-128-256 (four poolings), two 3x3x3
conv + BatchNorm + ReLU per level, max-pool down, nearest upsampling, skip concatenation,
16 output feature channels at input resolution, about 5.9M parameters.

Tap names (L = len(widths) - 1 poolings)::

    enc0 .. enc{L-1}   encoder level outputs (before pooling), level l at 1 / 2**l
    bottleneck         the deepest level, 1 / 2**L
    dec{L-1} .. dec0   decoder level outputs, level l at 1 / 2**l
    out                the output features (out_channels) at input resolution

The reference loss taps one late encoder layer, the bottleneck, three decoder layers and the
output: `default_taps(depth)` = (enc{L-1}, bottleneck, dec{L-1}, dec{L-2}, dec{L-3}, out).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNet3D", "build_model", "default_taps", "tap_names", "tap_channels", "tap_stride", "init_weights", "DEFAULT_CONFIG",
           "size_divisor"]

NORMS = ("batch", "instance", "none")

#: the reference model's config (what "random" and the bundled checkpoint build)
DEFAULT_CONFIG: dict[str, Any] = {
    "in_channels": 1,
    "out_channels": 16,
    "widths": [16, 32, 64, 128, 256],
    "convs_per_level": 2,
    "norm": "batch",
}


def _block(c_in: int, c_out: int, n_convs: int, norm: str) -> nn.Sequential:
    """`n_convs` x (3x3x3 conv + norm + ReLU), built from MONAI's Convolution block."""
    from monai.networks.blocks import Convolution  # lazily: ~5 s and ~180 MB of startup

    norm_arg: Any = {"batch": "BATCH", "instance": ("INSTANCE", {"affine": True}), "none": None}[norm]
    layers = []
    for i in range(n_convs):
        layers.append(
            Convolution(3, c_in if i == 0 else c_out, c_out, kernel_size=3, act="RELU", norm=norm_arg, adn_ordering="NDA")
        )
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """3D UNet: `forward(x) -> (B, out_channels, D, H, W)` for x `(B, in_channels, D, H, W)`.

    D, H, W must be divisible by 2**(len(widths) - 1). `config` holds the constructor
    arguments (JSON-able) and `build_model(config)` rebuilds the same architecture.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 16,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        convs_per_level: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths = {widths}: need at least two positive widths (one pooling)")
        if norm not in NORMS:
            raise ValueError(f"norm = {norm!r} is not one of {list(NORMS)}")
        if in_channels < 1 or out_channels < 1 or convs_per_level < 1:
            raise ValueError(
                f"in_channels={in_channels}, out_channels={out_channels}, convs_per_level={convs_per_level} must be >= 1"
            )
        # (no annotation: torch.jit.script warns on an annotated dict here; scripting leaves it out)
        self.config = {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "widths": widths,
            "convs_per_level": int(convs_per_level),
            "norm": norm,
        }
        depth = len(widths) - 1
        self.depth: int = depth
        self.in_channels: int = int(in_channels)  # plain attributes: the scripted forward reads them
        self.encoders = nn.ModuleList()
        c = in_channels
        for l in range(depth):
            self.encoders.append(_block(c, widths[l], convs_per_level, norm))
            c = widths[l]
        self.bottleneck = _block(c, widths[depth], convs_per_level, norm)
        self.decoders = nn.ModuleList()
        c = widths[depth]
        for l in reversed(range(depth)):
            # decoders[0] is the deepest (level depth-1); skip concat then convs
            self.decoders.append(_block(c + widths[l], widths[l], convs_per_level, norm))
            c = widths[l]
        self.head = nn.Conv3d(widths[0], out_channels, kernel_size=1)

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this (2**depth)."""
        return int(2**self.depth)  # int(): TorchScript's int ** int is a float

    def _check_input(self, x: torch.Tensor) -> None:
        # Scriptable (torch.jit.script compiles it into forward): no tuple(), no comprehensions.
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (B, {self.in_channels}, D, H, W), got {x.shape}")
        div = self.divisor
        for s in x.shape[2:]:
            if s % div != 0:
                raise ValueError(
                    f"input spatial shape {x.shape[2:]} must be divisible by {div} (2**{self.depth}); pad or crop the volume"
                )

    def forward_with_taps(self, x: torch.Tensor, taps: Sequence[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output and the requested intermediate activations `{name: (B, C, d, h, w)}`."""
        unknown = set(taps) - set(tap_names(self.depth))
        if unknown:
            raise ValueError(f"unknown taps {sorted(unknown)}; known: {tap_names(self.depth)}")
        return self._forward(x, list(taps))

    def _forward(self, x: torch.Tensor, wanted: List[str]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """forward_with_taps without the tap-name check, written so torch.jit.script compiles it."""
        self._check_input(x)
        got: Dict[str, torch.Tensor] = {}
        skips: List[torch.Tensor] = []
        h = x
        l = 0
        for enc in self.encoders:
            h = enc(h)
            if f"enc{l}" in wanted:
                got[f"enc{l}"] = h
            skips.append(h)
            h = F.max_pool3d(h, 2)
            l += 1
        h = self.bottleneck(h)
        if "bottleneck" in wanted:
            got["bottleneck"] = h
        l = self.depth - 1
        for dec in self.decoders:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = dec(torch.cat([h, skips[l]], dim=1))
            if f"dec{l}" in wanted:
                got[f"dec{l}"] = h
            l -= 1
        out = self.head(h)
        if "out" in wanted:
            got["out"] = out
        return out, got

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output features `(B, out_channels, D, H, W)` of `x` `(B, in_channels, D, H, W)`."""
        return self._forward(x, [])[0]


def tap_names(depth: int) -> list[str]:
    """All tap names of a UNet with `depth` poolings, shallow encoder first."""
    return [f"enc{l}" for l in range(depth)] + ["bottleneck"] + [f"dec{l}" for l in reversed(range(depth))] + ["out"]


def default_taps(depth: int) -> tuple[str, ...]:
    """The reference's six taps: late encoder, bottleneck, three decoder levels, output (fewer when shallow)."""
    decs = [f"dec{l}" for l in reversed(range(1, depth))][:3]
    return tuple([f"enc{depth - 1}", "bottleneck", *decs, "out"])


def tap_channels(config: dict[str, Any], tap: str) -> int:
    """Channel count of a tap for a model config."""
    w = list(config["widths"])
    depth = len(w) - 1
    if tap == "out":
        return int(config["out_channels"])
    if tap == "bottleneck":
        return w[depth]
    if tap[:3] in ("enc", "dec") and tap[3:].isdigit() and int(tap[3:]) < depth:
        return w[int(tap[3:])]
    raise ValueError(f"unknown tap {tap!r}; known: {tap_names(depth)}")


def tap_stride(depth: int, tap: str) -> int:
    """Downsampling factor of a tap relative to the input."""
    if tap == "out":
        return 1
    if tap == "bottleneck":
        return 2**depth
    if tap[:3] in ("enc", "dec") and tap[3:].isdigit() and int(tap[3:]) < depth:
        return 2 ** int(tap[3:])
    raise ValueError(f"unknown tap {tap!r}; known: {tap_names(depth)}")


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every conv / linear / norm layer deterministically from `generator`.

    Same distributions as PyTorch's defaults (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in)),
    norm weight 1 and bias 0), but drawn from the given generator: the global RNG is untouched.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if m.track_running_stats:
                m.reset_running_stats()
    return model


def size_divisor(model: nn.Module) -> int:
    """What a network's input sides must be multiples of: its `divisor` (UNet3D: 2**depth), looked
    up through DDP / torch.compile wrappers; a module without one is refused."""
    m = model
    for _ in range(4):
        div = getattr(m, "divisor", None)
        if div is not None:
            return int(div)
        m = getattr(m, "module", None) or getattr(m, "_orig_mod", None)
        if m is None:
            break
    raise ValueError(f"{type(model).__name__} has no `divisor` (the multiple its input sides must have); "
                     "pass a UNet3D (e.g. from load_model) or give the module a `divisor` attribute")


def build_model(config: dict[str, Any] | None = None, generator: torch.Generator | None = None, empty: bool = False) -> UNet3D:
    """A UNet3D from its `config` dict (None = the reference config).

    generator: the weights are drawn from it (deterministic; the global RNG is untouched).
    empty: weights left uninitialised (global RNG untouched) because they are loaded next.
    Neither: PyTorch's default init from the global RNG, like any nn.Module.
    Unknown keys raise ValueError naming them.
    """
    cfg = dict(DEFAULT_CONFIG if config is None else config)
    known = set(DEFAULT_CONFIG)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
    if generator is None and not empty:
        return UNet3D(**cfg)
    with torch.device("meta"):  # no global-RNG draws during construction
        model = UNet3D(**cfg)
    model = model.to_empty(device="cpu")
    if generator is not None:
        init_weights(model, generator)
    else:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()
    return model
