"""`make eval`: the real-data evaluation of a checkpoint beside the `random` and MIND baselines.

Data (offline only): Colin27 from Debian's mricron-data (`/usr/share/mricron/templates`: ch2 T1,
ch2bet brain-extracted T1, AAL atlas) and nilearn's MNI152 2009a template with its brain mask.
Without mricron-data only the MNI152 cases run (the report says so).

Cases (every record says which, in `extra["setting"]`):
- registration "colin27-warp": Colin27 at 2 mm against itself under a known smooth warp and a
  changed contrast (a random intensity curve), AAL Dice; a few seeds.
- registration "colin27<->mni152": the two subjects against each other (2 mm), the moving one
  displaced by a deliberate rigid offset so there is headroom, brain-mask Dice; both directions.
- registration "synthetic-heldout": two appearances of an engine label map, the second warped by
  a known smooth field; sample indices >= 10**9 (no training run uses them).
- few-shot "brain extraction": 1 shot, train on one subject, test on the other, both directions.
  nilearn's MNI152 T1 is already skull-stripped (its mask is its non-zero region), so
  Colin27 -> MNI152 is the easy direction and MNI152 -> Colin27 asks a network trained on a
  stripped brain to find the brain in a whole head (the report says so).
- few-shot "AAL slabs (within subject)": the 16 largest AAL regions on Colin27; the brain is cut
  into 4 axial slabs, slabs 0 and 2 are labelled (support / validation), 1 and 3 are the queries.

Registration runs for (net+mind, checkpoint), (net+mind, random) and (mind); few-shot for the
checkpoint and random initialisation. Everything lands under `out/`: datasets/, registration/,
fewshot/, report/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import torch
from torch.nn import functional as F

from synthvox.core.atomic import write_json
from synthvox.engine.config import EngineConfig
from synthvox.engine.render import render_sample, sample_to_numpy
from synthvox.engine.seeds import numpy_rng
from synthvox.train.checkpoint import Checkpoint, open_checkpoint

from .datasets import write_nifti, write_nnunet_dataset
from .fewshot import run_fewshot
from .labelnames import write_label_names
from .registration import RegistrationConfig, register_files
from .report import build_report
from .results import read_records, write_record

__all__ = ["MRICRON_DIR", "HELDOUT_INDEX", "data_sources", "halve", "smooth_warp", "warp_array", "contrast_curve",
           "build_fewshot_datasets", "registration_pairs", "synthetic_pairs", "run_eval"]

MRICRON_DIR = Path("/usr/share/mricron/templates")
#: first engine sample index of the held-out synthetic tasks (far beyond any training run)
HELDOUT_INDEX = 10**9
EVAL_SEED = 0
AAL_REGIONS = 16


# --- data -------------------------------------------------------------------------------------

def _load(path: Path, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=dtype).reshape(img.shape[:3]), np.asarray(img.affine, np.float64)


def data_sources(mricron_dir: str | Path = MRICRON_DIR) -> dict[str, Any]:
    """Which real data is here: {"colin": paths | None, "mni": True/False, "note": text}."""
    d = Path(mricron_dir)
    need = {"t1": d / "ch2.nii.gz", "bet": d / "ch2bet.nii.gz", "aal": d / "aal.nii.gz", "aal_names": d / "aal.nii.txt"}
    colin = need if all(p.is_file() for p in need.values()) else None
    try:
        from nilearn import datasets  # noqa: F401

        mni = True
    except ImportError:
        mni = False
    if colin and mni:
        note = f"Colin27 from mricron-data ({d}); MNI152 2009a from nilearn (offline files)"
    elif mni:
        note = f"mricron-data is not installed ({d} missing): MNI152 2009a from nilearn only; Colin27 cases skipped"
    elif colin:
        note = "nilearn is not installed: Colin27 cases only"
    else:
        note = "no real data: install mricron-data (apt) or nilearn (pip install synthvox[data])"
    return {"colin": colin, "mni": mni, "note": note}


def halve(x: np.ndarray, affine: np.ndarray, label: bool) -> tuple[np.ndarray, np.ndarray]:
    """1 mm -> 2 mm over 2x2x2 blocks (even-cropped): image mean, label majority (block mode)."""
    x = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    if label:
        blocks = np.stack([x[a::2, b::2, c::2] for a in (0, 1) for b in (0, 1) for c in (0, 1)]).reshape(8, -1)
        counts = (blocks[:, None, :] == blocks[None, :, :]).sum(1)
        out = blocks[counts.argmax(0), np.arange(blocks.shape[1])].reshape([n // 2 for n in x.shape])
    else:
        out = F.avg_pool3d(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None], 2)[0, 0].numpy()
    scale = np.diag([2.0, 2.0, 2.0, 1.0])
    scale[:3, 3] = 0.5  # the 2 mm voxel centre sits between the 1 mm centres
    return out, affine @ scale


def load_colin(src: dict[str, Path], spacing: int = 2) -> dict[str, Any]:
    """Colin27 T1, brain mask (ch2bet > 0), AAL (int) and names, at 1 or 2 mm."""
    t1, aff = _load(src["t1"])
    bet, _ = _load(src["bet"])
    aal, _ = _load(src["aal"], np.int64)
    names = {0: "background"}
    for line in Path(src["aal_names"]).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    mask = (bet > 0).astype(np.int64)
    if spacing == 2:
        bet, _ = halve(bet, aff, False)
        t1, aff2 = halve(t1, aff, False)
        mask, _ = halve(mask, aff, True)
        aal, _ = halve(aal, aff, True)
        aff = aff2
    return {"t1": t1, "bet": bet, "mask": mask, "aal": aal, "aal_names": names, "affine": aff}


def load_mni(resolution: int = 2) -> dict[str, Any]:
    """MNI152 2009a T1 and brain mask from nilearn (offline files; the T1 is skull-stripped)."""
    from nilearn import datasets  # lazily: optional extra, ~3 s of startup

    t = datasets.load_mni152_template(resolution=resolution)
    m = datasets.load_mni152_brain_mask(resolution=resolution)
    return {"t1": np.asarray(t.dataobj, np.float32), "mask": (np.asarray(m.dataobj) > 0).astype(np.int64),
            "affine": np.asarray(t.affine, np.float64)}


# --- known deformations ------------------------------------------------------------------------

def smooth_warp(shape: tuple[int, ...], rng: np.random.Generator, std_vox: float = 2.5, control: int = 5) -> np.ndarray:
    """A smooth displacement (3, D, H, W) in voxels: a `control`^3 Gaussian grid, trilinear upsampled."""
    coarse = torch.from_numpy(rng.normal(0.0, std_vox, size=(1, 3, control, control, control)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0].numpy()


def warp_array(x: np.ndarray, disp: np.ndarray, label: bool) -> np.ndarray:
    """Pull-back warp: out(i) = x(i + disp(i)); linear for images (border values outside, so no
    artificial black frame), nearest for labels (background outside)."""
    from scipy import ndimage  # lazily: ~18 MB in every worker, for this step only

    grid = np.indices(x.shape, dtype=np.float32) + disp
    if label:
        return ndimage.map_coordinates(x, grid, order=0, mode="constant", cval=0).astype(x.dtype)
    return ndimage.map_coordinates(x, grid, order=1, mode="nearest").astype(x.dtype)


def rigid_offset(shape: tuple[int, ...], rot_deg: float, shift_vox: tuple[float, float, float]) -> np.ndarray:
    """Displacement (3, D, H, W) of a rotation about the volume centre (axis 2) plus a shift."""
    c = (np.asarray(shape, np.float64) - 1) / 2
    a = np.deg2rad(rot_deg)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    src = R @ (idx - c[:, None]) + c[:, None] + np.asarray(shift_vox)[:, None]
    return (src - idx).reshape((3,) + tuple(shape)).astype(np.float32)


def contrast_curve(image: np.ndarray, rng: np.random.Generator, knots: int = 6) -> np.ndarray:
    """A changed contrast: min-max normalise, then a random piecewise-linear intensity map (0 -> 0)."""
    x = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    ys = np.concatenate([[0.0], rng.uniform(0.1, 1.0, knots - 1)])
    return np.interp(x, np.linspace(0, 1, knots), ys).astype(np.float32)


# --- cases --------------------------------------------------------------------------------------

def _aal_subset(aal: np.ndarray, names: dict[int, str], k: int) -> tuple[np.ndarray, dict[int, str]]:
    ids, counts = np.unique(aal[aal > 0], return_counts=True)
    keep = ids[np.argsort(-counts, kind="stable")[:k]]
    keep = np.sort(keep)
    lut = np.zeros(int(aal.max()) + 1, np.int64)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[aal], {0: "background", **{i + 1: names.get(int(v), f"AAL{v}") for i, v in enumerate(keep)}}


def build_fewshot_datasets(root: Path, sources: dict[str, Any]) -> list[Path]:
    """The nnU-Net datasets of the few-shot cases under `root` (reused when complete)."""
    root = Path(root)
    out: list[Path] = []
    if sources["colin"] and sources["mni"]:
        colin, mni = load_colin(sources["colin"], spacing=1), load_mni(resolution=1)
        for name, a, b, an, bn in (("BrainExtraction_Colin27toMNI152", colin, mni, "colin27", "mni152"),
                                   ("BrainExtraction_MNI152toColin27", mni, colin, "mni152", "colin27")):
            d = root / name
            if not (d / "dataset.json").is_file():
                write_nnunet_dataset(d, name, {0: "background", 1: "brain"}, {an: (a["t1"], a["mask"], a["affine"])},
                                     {bn: (b["t1"], b["mask"], b["affine"])}, channel="T1",
                                     description=f"1-shot brain extraction: train on {an}, test on {bn} (different subjects; "
                                                 "the MNI152 T1 is skull-stripped, Colin27 is a whole head)")
            out.append(d)
    if sources["colin"]:
        name = "AALSlabs_Colin27"
        d = root / name
        if not (d / "dataset.json").is_file():
            colin = load_colin(sources["colin"], spacing=1)
            lab, names = _aal_subset(colin["aal"], colin["aal_names"], AAL_REGIONS)
            zs = np.flatnonzero(colin["mask"].any(axis=(0, 1)))
            edges = np.linspace(zs[0], zs[-1] + 1, 5).round().astype(int)
            cases = {}
            for s in range(4):
                sl = slice(edges[s], edges[s + 1])
                aff = colin["affine"].copy()
                aff[:3, 3] += aff[:3, 2] * edges[s]  # the slab's own origin: world positions unchanged
                cases[f"slab{s}"] = (colin["t1"][:, :, sl], lab[:, :, sl], aff)
            write_nnunet_dataset(d, name, names, {k: cases[k] for k in ("slab0", "slab2")},
                                 {k: cases[k] for k in ("slab1", "slab3")}, channel="T1",
                                 description=f"within-subject: the {AAL_REGIONS} largest AAL regions on Colin27; "
                                             "axial slabs 0/2 labelled, 1/3 queried")
        out.append(d)
    return out


def _pair(root: Path, case: str, fixed: tuple, moving: tuple, names: dict[int, str] | None = None) -> dict[str, Any]:
    """Write fixed/moving images and labels (with a names sidecar when `names`) of one registration pair."""
    d = root / case
    paths = {}
    for role, (img, lab, aff) in (("fixed", fixed), ("moving", moving)):
        paths[role] = write_nifti(d / f"{role}.nii.gz", img.astype(np.float32), aff)
        paths[f"{role}_labels"] = write_nifti(d / f"{role}_labels.nii.gz", lab.astype(np.int16), aff)
        if names:
            write_label_names(d / f"{role}_labels.nii.txt", {i: n for i, n in names.items() if i})
    return {"case": case, **paths}


def registration_pairs(root: Path, sources: dict[str, Any], n_warps: int, both_directions: bool = True) -> list[dict[str, Any]]:
    """Real-data registration pairs (written under `root`), each with its `setting`."""
    pairs = []
    colin = load_colin(sources["colin"], spacing=2) if sources["colin"] else None
    if colin is not None:
        for s in range(n_warps):
            rng = numpy_rng(EVAL_SEED, s, "eval.colin-warp")
            disp = smooth_warp(colin["t1"].shape, rng)
            moving = (contrast_curve(warp_array(colin["t1"], disp, False), rng), warp_array(colin["aal"], disp, True), colin["affine"])
            p = _pair(root, f"colin27-warp-{s}", (colin["t1"], colin["aal"], colin["affine"]), moving, colin["aal_names"])
            pairs.append({**p, "setting": "colin27-warp (AAL Dice)"})
    if colin is not None and sources["mni"]:
        mni = load_mni(resolution=2)
        # nilearn's MNI152 T1 is skull-stripped: pair it with Colin27's brain-extracted T1
        colin = {**colin, "t1": colin["bet"]}
        directions = (("mni152-to-colin27", colin, mni), ("colin27-to-mni152", mni, colin))
        for name, fx, mv in directions[: 2 if both_directions else 1]:
            off = rigid_offset(mv["t1"].shape, 8.0, (3.0, -2.0, 2.0))  # 8 deg, ~8 mm: headroom for the affine stage
            moving = (warp_array(mv["t1"], off, False), warp_array(mv["mask"], off, True), mv["affine"])
            p = _pair(root, name, (fx["t1"], fx["mask"], fx["affine"]), moving)
            pairs.append({**p, "setting": "colin27<->mni152 (brain-mask Dice, rigid offset start)"})
    return pairs


def synthetic_pairs(root: Path, n: int, size: int) -> list[dict[str, Any]]:
    """Held-out engine tasks: view 0 vs view 1 warped by a known field (indices >= HELDOUT_INDEX)."""
    pairs = []
    cfg = EngineConfig(size=size)
    for i in range(n):
        idx = HELDOUT_INDEX + i
        s = sample_to_numpy(render_sample(cfg, EVAL_SEED, idx))
        lab = s["labels"].astype(np.int64)
        v0, v1 = (s["views"][k].astype(np.float32) / 255.0 for k in (0, 1))
        disp = smooth_warp(lab.shape, numpy_rng(EVAL_SEED, idx, "eval.synthetic-warp"), std_vox=size / 32)
        aff = np.eye(4)
        p = _pair(root, f"synthetic-{idx}", (v0, lab, aff), (warp_array(v1, disp, False), warp_array(lab, disp, True), aff))
        pairs.append({**p, "setting": f"synthetic-heldout {size}^3 (index >= 1e9)"})
    return pairs


# --- the run -------------------------------------------------------------------------------------

def _inits(ckpt: Checkpoint) -> list[Checkpoint]:
    """The checkpoint and the random baseline (the checkpoint alone when it is the random init)."""
    return [ckpt] if ckpt.is_random else [ckpt, Checkpoint.random()]


def _registration(pairs: list[dict[str, Any]], out: Path, ckpt: Checkpoint, quick: bool, device: str,
                  log: Callable[[str], Any] | None) -> list[dict[str, Any]]:
    extra_cfg = {"adam_iters": 20, "affine_iters": 30} if quick else {}
    methods: list[tuple[str, Checkpoint | None]] = [("net+mind", c) for c in _inits(ckpt)] + [("mind", None)]
    records = []
    for features, ck in methods:
        model, rec = (ck.build(device), ck.record_dict()) if ck is not None else (None, None)
        tag = features if ck is None else f"{features}_{ck.tag}"
        for p in pairs:
            case_out = out / tag / p["case"]
            if (case_out / "metrics.json").is_file():
                old = read_records([case_out / "metrics.json"])
                if old:
                    records += old
                    continue
            r = register_files(p["fixed"], p["moving"], case_out, fixed_labels=p["fixed_labels"],
                               moving_labels=p["moving_labels"], cfg=RegistrationConfig(features=features, **extra_cfg),
                               model=model, model_record=rec, case=p["case"], device=device, echo=log)
            r["extra"]["setting"] = p["setting"]
            r["extra"]["quick"] = quick
            write_record(r, case_out / "metrics.json")
            r["_path"] = str(case_out / "metrics.json")
            records.append(r)
    return records


def run_eval(ckpt: str | Checkpoint, out: str | Path, *, quick: bool = False, device: str | None = None,
             log: Callable[[str], Any] | None = print, mricron_dir: str | Path = MRICRON_DIR,
             verify_weights: bool = True) -> dict[str, Path]:
    """Run every case for `ckpt` (plus the random and MIND baselines) and write the report.

    `ckpt`: a resolved `Checkpoint`, or a spec resolved here once (`verify_weights` applies).
    Every case uses that one Checkpoint: record.json read once, weights hashed once.

    `quick`: few steps, one seed, fewer registrations (checks the flow; numbers mean little).
    Finished parts are reused on a rerun. Returns the report paths {"markdown", "html"}.
    """
    ck = open_checkpoint(ckpt, verify_weights=verify_weights)
    out = Path(out)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    src = data_sources(mricron_dir)
    notes = [f"data: {src['note']}"]
    if log:
        log(f"[eval] {src['note']}")
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []

    pairs = registration_pairs(out / "datasets" / "registration", src, n_warps=1 if quick else 3, both_directions=not quick)
    try:
        pairs += synthetic_pairs(out / "datasets" / "registration", n=1 if quick else 3, size=64)
    except ImportError as e:  # the engine is optional for this part of the evaluation
        notes.append(f"synthetic held-out tasks skipped: the engine could not render ({e})")
    if log:
        log(f"[eval] registration: {len(pairs)} pairs x methods")
    records += _registration(pairs, out / "registration", ck, quick, dev, log)

    steps, seeds = (10, 1) if quick else (None, 3)
    inits = _inits(ck)
    for d in build_fewshot_datasets(out / "datasets", src):
        if log:
            log(f"[eval] few-shot on {d.name}")
        records += run_fewshot(d, inits, [1], seeds, out / "fewshot" / d.name, protocol="cpu", steps=steps,
                               device=dev, log=log, extra={"quick": quick})
    if quick:
        notes.append("quick run: 10 few-shot steps, 1 seed, one warp and one subject direction, shortened registration "
                     "(20 Adam, 30 affine iterations); the numbers check the flow only")
    notes.append("few-shot: cpu protocol (2 mm, 64^3 crops or the volume, batch 2, cosine schedule); "
                 "brain extraction has a single labelled case, so the last step is kept (no validation case); "
                 "nilearn's MNI152 T1 is skull-stripped while Colin27 is a whole head (MNI->Colin is the hard direction); "
                 "the subject-pair registration uses Colin27's brain-extracted T1 for the same reason")
    notes.append("registration: ConvexAdam-style (net+mind with the checkpoint, net+mind with a random network, MIND alone); "
                 "hyper-parameters tuned without masks, no masks used")
    write_json(out / "eval.json", {"ckpt": ck.spec, "quick": quick, "device": dev, "notes": notes},
               sort_keys=False, newline=False)
    # read back from disk so every report row cites its record file (records of other
    # checkpoints evaluated into the same folder join them, side by side)
    records = read_records([p for p in (out / "registration", out / "fewshot") if p.exists()])
    title = f"synthvox evaluation: {ck.spec}" + (" (quick)" if quick else "")
    return build_report(records, out / "report", title=title, notes=notes)
