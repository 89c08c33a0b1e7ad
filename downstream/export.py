"""Portable feature models: a checkpoint as one TorchScript or ONNX file that needs no synthvox.

The exported module is `PortableFeatures`: raw intensities `(B, 1, D, H, W)` (any D, H, W) ->
features `(B, C, D, H, W)` float32, with everything `downstream.features.extract_features`
does on a whole volume built in: the checkpoint's input normalisation (non-finite voxels set
to the finite minimum, the optional clip window, min-max to [0, 1] per volume; a constant
volume gives zeros), edge padding to the network's divisor and cropping back. Sliding-window
inference is not part of it: run volumes that fit memory, or tile them yourself.

The file also carries a JSON description (key `synthvox`): model config, checkpoint name and
sha256, normalisation, input and output layout. TorchScript keeps it as the extra file
`synthvox.json` (`torch.jit.load(f, _extra_files={"synthvox.json": ""})`), ONNX as the model's
metadata property `synthvox`.

    export_model("bundled", "features.pt", "torchscript")
    m = torch.jit.load("features.pt"); feats = m(torch.from_numpy(vol)[None, None].float())
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthvox.core.atomic import atomic_path
from synthvox.core.errors import SynthvoxError
from synthvox.train.checkpoint import Checkpoint
from synthvox.train.model import size_divisor

__all__ = ["PortableFeatures", "export_model", "export_description", "FORMATS", "ExportError", "METADATA_KEY"]

FORMATS = ("torchscript", "onnx")
METADATA_KEY = "synthvox"
_EXTRA_FILE = "synthvox.json"


class ExportError(SynthvoxError, ValueError):
    """The model cannot be exported as asked; the message says what to do."""


class PortableFeatures(nn.Module):
    """Normalise + pad + network + crop in one module: `(B, 1, D, H, W)` raw -> `(B, C, D, H, W)`.

    Scriptable (torch.jit.script) and exportable (torch.onnx). `clip` is the normalisation's
    clip window `[lo, hi]` or None; each volume of the batch is normalised on its own.
    """

    def __init__(self, net: nn.Module, clip: list[float] | tuple[float, float] | None = None) -> None:
        super().__init__()
        self.net = net
        self.multiple: int = size_divisor(net)
        self.has_clip: bool = clip is not None
        self.clip_lo: float = float(clip[0]) if clip is not None else 0.0
        self.clip_hi: float = float(clip[1]) if clip is not None else 0.0
        if clip is not None and not self.clip_lo < self.clip_hi:
            raise ExportError(f"normalisation clip {list(clip)}: low must be below high")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """`downstream.features.normalise_image` per volume of a `(B, 1, D, H, W)` batch."""
        finite = torch.isfinite(x)
        inf = torch.full_like(x, float("inf"))
        lo_f = torch.where(finite, x, inf).amin(dim=(1, 2, 3, 4), keepdim=True)
        x = torch.where(finite, x, lo_f)  # all non-finite: lo_f is inf, the range below is NaN -> zeros
        if self.has_clip:
            x = x.clamp(self.clip_lo, self.clip_hi)
        lo = x.amin(dim=(1, 2, 3, 4), keepdim=True)
        hi = x.amax(dim=(1, 2, 3, 4), keepdim=True)
        span = hi - lo
        return torch.where(span > 0, (x - lo) / span, torch.zeros_like(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[2], x.shape[3], x.shape[4]
        m = self.multiple
        x = self.normalise(x.float())
        # pad the high ends with edge values to the divisor, as extract_features does
        x = F.pad(x, [0, (m - w % m) % m, 0, (m - h % m) % m, 0, (m - d % m) % m], mode="replicate")
        return self.net(x)[:, :, :d, :h, :w]


def export_description(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON the exported file carries: where it came from and how to call it."""
    return {
        "format": fmt,
        "checkpoint": {"name": record.get("name"), "sha256": record.get("sha256"), "step": record.get("step")},
        "model": dict(record.get("model") or {}),
        "normalisation": dict(record.get("normalisation") or {"kind": "minmax", "clip": None}),
        "normalisation_built_in": True,
        "input": "(B, 1, D, H, W) float32 raw intensities, array axes = NIfTI (i, j, k); any D, H, W",
        "output": "(B, C, D, H, W) float32 features on the input grid",
    }


def _portable(model: nn.Module, record: dict[str, Any], clip: list[float] | None) -> PortableFeatures:
    norm = dict(record.get("normalisation") or {})
    if norm.get("kind", "minmax") != "minmax":
        raise ExportError(f"normalisation kind {norm.get('kind')!r} cannot be exported (known: 'minmax')")
    if clip is None:
        clip = norm.get("clip")
    if getattr(model, "in_channels", 1) != 1:
        raise ExportError(f"the network takes {model.in_channels} input channels; export needs a single-channel network")
    return PortableFeatures(model.cpu().float().eval(), clip).eval()


def export_model(model: nn.Module, record: "dict[str, Any] | Checkpoint", out: str | Path, fmt: str = "torchscript",
                 clip: list[float] | tuple[float, float] | None = None, example_side: int | None = None) -> Path:
    """Write `model` (a UNet3D from `load_model` / `Checkpoint.build`, with its checkpoint `record`
    or `Checkpoint`) as one portable file.

    fmt: "torchscript" (torch.jit.script; load with torch.jit.load) or "onnx" (needs the
    `onnx` extra: `pip install -c constraints.txt 'synthvox[onnx]'`; D, H, W stay dynamic).
    clip: overrides the checkpoint's normalisation clip window. The file is written atomically.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {list(FORMATS)}")
    if isinstance(record, Checkpoint):
        record = record.record_dict()
    clip_l = None if clip is None else [float(clip[0]), float(clip[1])]
    module = _portable(model, record, clip_l)
    desc = export_description(record, fmt)
    desc["normalisation"]["clip"] = [module.clip_lo, module.clip_hi] if module.has_clip else None
    out = Path(out)
    with atomic_path(out) as tmp:
        if fmt == "torchscript":
            _torchscript(module, tmp, desc)
        else:
            _onnx(module, tmp, desc, example_side or 2 * module.multiple)
    return out


def _torchscript(module: PortableFeatures, path: Path, desc: dict[str, Any]) -> None:
    import warnings

    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit.script deprecated; it is what TorchScript users load
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(path), _extra_files={_EXTRA_FILE: json.dumps(desc, sort_keys=True)})


def _onnx(module: PortableFeatures, path: Path, desc: dict[str, Any], side: int) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx extra ({e.name} is not installed): "
                          "pip install -c constraints.txt 'synthvox[onnx]'") from None
    import io
    import logging
    import warnings
    from contextlib import redirect_stdout

    from torch.export import Dim

    x = torch.rand(1, 1, side, side, side)
    dims = {"image": {0: Dim("batch", min=1), 2: Dim.AUTO, 3: Dim.AUTO, 4: Dim.AUTO}}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter prints its progress
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, nothing to act on
        prog = torch.onnx.export(module, (x,), dynamo=True, input_names=["image"], output_names=["features"],
                                 dynamic_shapes=(dims["image"],), optimize=True, verbose=False)
    proto = prog.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(desc, sort_keys=True)
    onnx.save_model(proto, str(path))
