"""Representation probes: what a network has learned, measured cheaply enough to run during training.

Three probes, each a function of a network (any UNet3D, trained or not):

- **Cross-view voxel retrieval** (synthetic, held out): a few engine samples rendered with
  `ProbeConfig.seed` at indices from `PROBE_INDEX` (far beyond any training run's indices and
  apart from `make eval`'s held-out tasks). View 0 is cut from one corner, view 1 (another
  appearance) from the opposite corner; voxels of the overlap are sampled (up to `per_label`
  per label, the same anatomy in both crops); each voxel of view 0 retrieves its nearest
  feature (cosine) among the sampled voxels of view 1 and vice versa; the score is the
  fraction whose retrieved voxel has the same label, macro over labels (`retrieval_accuracy`).
  Chance is 1 / (labels present); a network that has learned nothing contrast-invariant sits
  near it. Keys `retrieval/<tap>`, `retrieval/mean` (over taps), `retrieval/chance`.
- **Registration with network features alone** (real): Colin27 against itself under a known
  warp with inverted contrast (`pairs.colin_pair`, `reg_spacing` mm), `features="net"`, AAL
  macro Dice. Keys `reg/dice_before`, `reg/dice_net`, `reg/seconds`.
- **PCA image** (real): the first three principal components (fitted inside the brain) of the
  network's output features of Colin27 (or nilearn's MNI152 without mricron-data) as RGB,
  three mid-slices. Key `pca/var3`: the share of feature variance in those three components.

`make_probe_hook(cfg)` returns `hook(model, step) -> {"probe/<key>": value}` for a trainer's
validation; `run_probes(model, record, data, cfg)` is the function under both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synthvox.engine.config import EngineConfig, engine_config_hash
from synthvox.engine.render import render_sample
from synthvox.engine.seeds import torch_generator
from synthvox.engine.templates import resolve_bank
from synthvox.train.augment import minmax, to_float_views
from synthvox.train.model import build_model, default_taps, tap_names

from .evaluate import EVAL_SEED, HELDOUT_INDEX
from .features import extract_features, pca_rgb
from .grid import sample_voxels
from .pairs import MRICRON, colin_available, colin_image, colin_pair
from .registration import RegistrationConfig, register_volumes, registration_metrics

__all__ = ["PROBE_INDEX", "ProbeConfig", "ProbeData", "ProbeResult", "retrieval_accuracy", "retrieval_probe",
           "registration_probe", "pca_probe", "load_probe_data", "run_probes", "make_probe_hook", "probe_taps",
           "unwrap_model"]

#: first engine sample index of the probes' synthetic pairs: beyond any training run (indices
#: from 0; on-the-fly validation from 2**40 uses another range too) and 10**6 past `make eval`'s
#: held-out tasks, which start at HELDOUT_INDEX = 10**9
PROBE_INDEX = HELDOUT_INDEX + 10**6


@dataclass(frozen=True)
class ProbeConfig:
    """What the probes measure and how much it costs (defaults: ~10-25 s per network on 2 cores)."""

    size: int = 96                 # side of the synthetic probe samples (default engine config otherwise)
    crop: int = 64                 # view 0 from the low corner, view 1 from the high corner (overlap 32^3)
    samples: int = 4               # synthetic pairs
    per_label: int = 32            # sampled voxels per label per pair
    seed: int = EVAL_SEED          # engine seed of the probe samples (indices from PROBE_INDEX)
    registration: bool = True      # the Colin27 known-warp probe (needs mricron-data)
    reg_spacing: float = 3.0       # mm; 3 mm: 61x73x61, ~5-10 s per network
    reg_seed: int = 0              # the known warp's seed
    pca: bool = True               # the PCA image and pca/var3
    pca_spacing: float = 2.0       # mm
    mricron_dir: str = str(MRICRON)

    def __post_init__(self) -> None:
        if not self.size / 2 < self.crop < self.size:
            raise ValueError(f"probe.crop = {self.crop} must be between half of probe.size = {self.size} and it")
        for name in ("size", "crop", "samples", "per_label"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"probe.{name} = {getattr(self, name)!r} must be >= 1")
        for name in ("reg_spacing", "pca_spacing"):
            if not 1.0 <= float(getattr(self, name)) <= 8.0:
                raise ValueError(f"probe.{name} = {getattr(self, name)!r} must be in [1, 8] mm")


@dataclass
class ProbeData:
    """Everything the probes read, loaded once (`load_probe_data`)."""

    samples: list[dict[str, Any]]            # {"index", "labels" (D,H,W) int64, "views" (V,D,H,W) float in [0,1]}
    engine_hash: str
    pair: tuple | None                       # colin_pair(...) or None
    brain: tuple[np.ndarray, np.ndarray] | None  # (image, brain mask) for the PCA probe, or None
    brain_name: str = ""
    notes: list[str] = field(default_factory=list)  # probes that cannot run here, and why


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    pca: np.ndarray | None = None            # (D, H, W, 3) RGB in [0, 1]
    image: np.ndarray | None = None          # the brain image the PCA was computed on
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# --- retrieval -------------------------------------------------------------------------------------

def _sample_per_label(labels: torch.Tensor, per_label: int, generator: torch.Generator | None) -> torch.Tensor:
    """Flat indices of up to `per_label` voxels of each label (random with `generator`, else the first ones)."""
    flat = labels.reshape(-1)
    picks = []
    for lab in torch.unique(flat):
        where = torch.nonzero(flat == lab).reshape(-1)
        if where.numel() > per_label:
            if generator is None:
                where = where[:per_label]
            else:
                where = where[torch.randperm(where.numel(), generator=generator)[:per_label]]
        picks.append(where)
    return torch.cat(picks)


def retrieval_accuracy(feats_a: torch.Tensor, feats_b: torch.Tensor, labels: torch.Tensor, per_label: int = 16,
                       generator: torch.Generator | None = None) -> float:
    """Cross-view nearest-neighbour label accuracy, macro over labels, both directions averaged.

    feats_a, feats_b: `(C, *S)` features of two views of the same geometry; labels: `(*S)`
    integers on the same grid. Up to `per_label` voxels per label are sampled (the same
    locations in both views); each sampled voxel of one view retrieves the sampled voxel of the
    other view with the highest cosine similarity (ties: the first). The per-label hit rates
    are averaged over the labels present. One-hot label features give 1.0; constant features
    give exactly 1 / (labels present), the chance level. Deterministic for a given generator
    (None: the first voxels of each label in raster order).
    """
    if feats_a.shape != feats_b.shape or feats_a.shape[1:] != labels.shape:
        raise ValueError(f"features {tuple(feats_a.shape)} / {tuple(feats_b.shape)} and labels {tuple(labels.shape)} "
                         "must be (C, *S), (C, *S) and (*S)")
    idx = _sample_per_label(labels.cpu(), int(per_label), generator)
    lab = labels.reshape(-1).cpu()[idx]
    c = feats_a.shape[0]
    fa = F.normalize(feats_a.reshape(c, -1)[:, idx.to(feats_a.device)].T.float(), dim=1)
    fb = F.normalize(feats_b.reshape(c, -1)[:, idx.to(feats_b.device)].T.float(), dim=1)
    sim = (fa @ fb.T).cpu()
    hits = [(lab[sim.argmax(1)] == lab).float(), (lab[sim.argmax(0)] == lab).float()]
    classes = torch.unique(lab)
    per = [torch.stack([h[lab == k].mean() for k in classes]).mean() for h in hits]
    return float((per[0] + per[1]) / 2)


def probe_taps(model: nn.Module, record: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The taps the probes score: the reference's default taps plus any the run trained, in network order."""
    depth = int(model.depth)
    wanted = set(default_taps(depth)) | set((record or {}).get("taps") or [])
    return tuple(t for t in tap_names(depth) if t in wanted)


@torch.no_grad()
def retrieval_probe(model: nn.Module, samples: list[dict[str, Any]], taps: tuple[str, ...], crop: int = 64,
                    per_label: int = 32, seed: int = EVAL_SEED) -> dict[str, float]:
    """`retrieval/<tap>` (mean over samples), `retrieval/mean` (over taps) and `retrieval/chance`.

    View 0 is cut from the low corner of each sample (a `crop`^3 cube), view 1 from the high
    corner; voxels are sampled per label in the overlap, at input resolution (the same points
    for every tap, so all taps share one chance level); a coarser tap is read at those points
    by trilinear interpolation (what a user of the upsampled features gets). Why opposite
    corners: with the same crop in both views, the position code that zero padding gives even
    a random network retrieves the very same location, so a random init scored 1.0 at the
    bottleneck (chance 0.05); shifted crops put the same anatomy at different positions.
    """
    acc: dict[str, list[float]] = {t: [] for t in taps}
    chance = []
    for s in samples:
        labels, views = s["labels"], s["views"]
        shift = labels.shape[0] - crop
        if not 0 < shift < crop or min(labels.shape) != max(labels.shape):
            raise ValueError(f"probe crop {crop} must be below the sample side {labels.shape[0]} and above half of it")
        a = views[0, :crop, :crop, :crop]
        b = views[1, shift:, shift:, shift:]
        x = torch.stack([a, b])[:, None].contiguous(memory_format=torch.channels_last_3d)  # (2, 1, c, c, c)
        over = labels[shift:crop, shift:crop, shift:crop]
        idx = _sample_per_label(over, per_label, torch_generator(seed, int(s["index"]), "probe.retrieval"))
        lab = over.reshape(-1)[idx]
        pts = torch.stack(torch.unravel_index(idx, over.shape), -1).to(torch.float32)  # (N, 3) (i, j, k) in B's crop
        pos = torch.stack([pts + shift, pts])[:, :, None, None, :]  # the same voxels in A's and in B's crop
        _, feats = model.forward_with_taps(x, taps)
        for t in taps:
            f = feats[t].float()
            stride = torch.tensor([c / n for c, n in zip(x.shape[2:], f.shape[2:])])
            v = sample_voxels(f, (pos + 0.5) / stride - 0.5, "linear", "border")[:, :, :, 0, 0]  # (2, C, N)
            acc[t].append(retrieval_accuracy(v[0], v[1], lab, per_label=idx.numel()))
        chance.append(1.0 / len(torch.unique(lab)))
    out = {f"retrieval/{t}": float(np.mean(v)) for t, v in acc.items()}
    out["retrieval/mean"] = float(np.mean([out[f"retrieval/{t}"] for t in taps]))
    out["retrieval/chance"] = float(np.mean(chance))
    return out


# --- real data -------------------------------------------------------------------------------------

def registration_probe(model: nn.Module, normalisation: dict[str, Any] | None, pair: tuple) -> dict[str, float]:
    """Colin27 known-warp registration with `features="net"`: AAL macro Dice before and after."""
    fixed, flab, moving, mlab, _ = pair
    t0 = time.perf_counter()
    res = register_volumes(fixed, moving, RegistrationConfig(features="net"), model, normalisation)
    m, _, _ = registration_metrics(flab, mlab, res.warp(mlab, "nearest"), fixed.spacing, res.disp_voxels, hd=False)
    return {"reg/dice_before": float(m["dice_macro_before"]), "reg/dice_net": float(m["dice_macro_after"]),
            "reg/seconds": time.perf_counter() - t0}


def pca_probe(model: nn.Module, normalisation: dict[str, Any] | None, brain: tuple[np.ndarray, np.ndarray]
              ) -> tuple[dict[str, float], np.ndarray]:
    """(`{"pca/var3": share of variance in 3 PCs}`, `(D, H, W, 3)` RGB) of the output features of a brain."""
    image, mask = brain
    feats = extract_features(model, image, normalisation).numpy()
    inside = feats.reshape(feats.shape[0], -1)[:, mask.reshape(-1)].T
    inside = inside - inside.mean(0)
    sv = np.linalg.svd(inside, compute_uv=False)
    var = sv**2
    var3 = float(var[:3].sum() / var.sum()) if var.sum() > 0 else 1.0
    return {"pca/var3": var3}, pca_rgb(feats, mask)


# --- data and the run ------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _synthetic(size: int, samples: int, seed: int) -> tuple[tuple[dict[str, Any], ...], str]:
    cfg = EngineConfig(size=size)
    bank = resolve_bank(cfg.bank)
    out = []
    for k in range(samples):
        i = PROBE_INDEX + k
        s = render_sample(cfg, seed, i, bank=bank)
        views = minmax(to_float_views(s["views"]))
        out.append({"index": i, "labels": s["labels"].to(torch.int64), "views": views})
    return tuple(out), engine_config_hash(cfg, bank.content_hash)


def _brain(cfg: ProbeConfig) -> tuple[tuple[np.ndarray, np.ndarray] | None, str, str | None]:
    """(image, mask), its name, and a note when no real brain is installed."""
    if colin_available(cfg.mricron_dir):
        vol, _ = colin_image(cfg.pca_spacing, cfg.mricron_dir)
        return (vol.data, vol.data > 0.05 * vol.data.max()), f"Colin27 ch2bet {cfg.pca_spacing:g} mm", None
    try:
        from nilearn import datasets  # lazily: optional extra, ~3 s of startup
    except ImportError:
        return None, "", "PCA probe skipped: neither mricron-data (Colin27) nor nilearn (MNI152) is installed"
    t = datasets.load_mni152_template(resolution=2)
    m = datasets.load_mni152_brain_mask(resolution=2)
    return (np.asarray(t.dataobj, np.float32), np.asarray(m.dataobj) > 0), "MNI152 2009a 2 mm (nilearn)", None


def load_probe_data(cfg: ProbeConfig) -> ProbeData:
    """Render the synthetic pairs and load the real data the enabled probes need (once per process)."""
    samples, ehash = _synthetic(cfg.size, cfg.samples, cfg.seed)
    notes: list[str] = []
    pair = brain = None
    name = ""
    if cfg.registration:
        if colin_available(cfg.mricron_dir):
            pair = colin_pair(spacing=cfg.reg_spacing, seed=cfg.reg_seed, root=cfg.mricron_dir)
        else:
            notes.append(f"registration probe skipped: Colin27/AAL not found in {cfg.mricron_dir} (apt install mricron-data)")
    if cfg.pca:
        brain, name, note = _brain(cfg)
        if note:
            notes.append(note)
    return ProbeData(list(samples), ehash, pair, brain, name, notes)


def run_probes(model: nn.Module, record: dict[str, Any] | None, data: ProbeData, cfg: ProbeConfig) -> ProbeResult:
    """Every enabled probe on `model` (eval mode, no gradients; the caller's torch threads)."""
    norm = (record or {}).get("normalisation")
    with torch.no_grad():  # channels-last: ~1.5x faster CPU convolutions, same numbers (features.py)
        model = model.to(memory_format=torch.channels_last_3d).eval()
    res = ProbeResult(metrics={}, notes=list(data.notes))
    t0 = time.perf_counter()
    res.metrics.update(retrieval_probe(model, data.samples, probe_taps(model, record), cfg.crop, cfg.per_label, cfg.seed))
    res.seconds["retrieval"] = time.perf_counter() - t0
    if data.pair is not None:
        t0 = time.perf_counter()
        res.metrics.update(registration_probe(model, norm, data.pair))
        res.seconds["registration"] = time.perf_counter() - t0
    if data.brain is not None:
        t0 = time.perf_counter()
        m, res.pca = pca_probe(model, norm, data.brain)
        res.metrics.update(m)
        res.image = data.brain[0]
        res.seconds["pca"] = time.perf_counter() - t0
    return res


def unwrap_model(model: nn.Module) -> nn.Module:
    """The UNet3D inside DDP / torch.compile / a Pretrainer wrapper."""
    for _ in range(4):
        if hasattr(model, "forward_with_taps") and hasattr(model, "config"):
            return model
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None) or getattr(model, "model", None)
        if model is None:
            break
    raise ValueError("the probes need a UNet3D (or a DDP / compiled / Pretrainer wrapper of one)")


def make_probe_hook(cfg: ProbeConfig | None = None, record: dict[str, Any] | None = None
                    ) -> Callable[[nn.Module, int], dict[str, float]]:
    """`hook(model, step) -> {"probe/<key>": value}` for a trainer to log at every validation.

    The hook probes a CPU copy of the network (the training model, its device, mode and
    memory layout are left untouched); the probe data are loaded on the first call.
    `record`: the normalisation and trained taps (defaults: min-max, the default taps).
    """
    cfg = cfg or ProbeConfig()
    state: dict[str, ProbeData] = {}

    def hook(model: nn.Module, step: int) -> dict[str, float]:
        if "data" not in state:
            state["data"] = load_probe_data(cfg)
        inner = unwrap_model(model)
        net = build_model(dict(inner.config), empty=True)  # a CPU float32 copy, built without touching the global RNG
        net.load_state_dict({k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
                             for k, v in inner.state_dict().items()})
        res = run_probes(net, record, state["data"], cfg)
        out = {f"probe/{k}": float(v) for k, v in res.metrics.items()}
        out["probe/seconds"] = float(sum(res.seconds.values()))
        return out

    return hook
