"""Register files and write every output of the Coordinates and Results contracts.

Outputs in `out/`:
- `disp.nii.gz`: pull-back displacement on the fixed grid, mm, ITK 5D `(X, Y, Z, 1, 3)`,
  vector intent, LPS components (header description "synthvox disp pull-back mm LPS");
- `disp_l2r.nii.gz` (with `l2r=True`): Learn2Reg voxel form `(X, Y, Z, 3)` = moving voxel
  coordinates minus fixed voxel indices (equal to Learn2Reg's convention when both share a grid);
- `warped.nii.gz`, `warped_labels.nii.gz` (nearest), on the fixed grid with the fixed affine;
- `metrics.json`: a results record (Dice per label and macro before/after, HD95 mm, folding,
  SDlogJ, seconds per stage); `overview.png`: fixed / moving / warped slices with contours.
Direction: the moving image is warped onto the fixed one (moving -> fixed).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..grid import apply_matrix, resample_to_grid, warp_volume
from ..io import Volume, load_labels, load_nifti, save_displacement, save_figure, save_nifti
from ..labelnames import label_names_for
from ..metrics import dice_per_label, folding_fraction, hd95_per_label, jacobian_determinant, labels_present, macro_dice, sdlogj
from ..results import make_record, write_record
from .config import RegistrationConfig
from .pipeline import RegistrationResult, register_volumes

__all__ = ["registration_metrics", "register_files", "register_batch", "read_pairs", "case_id", "check_label_pair"]


def _finite_mean(d: dict[int, float]) -> float:
    vals = [v for v in d.values() if math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def registration_metrics(fixed_labels: np.ndarray | None, before: np.ndarray | None, after: np.ndarray | None,
                         spacing: tuple[float, ...], disp_voxels: np.ndarray, mask: np.ndarray | None = None,
                         hd: bool = True) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(metrics, units, extra) for one registered pair.

    Labels are scored over those present in both the fixed and the (header-resampled) moving
    map; the others are listed in `extra["labels_absent"]`, never averaged as zero.
    """
    det = jacobian_determinant(disp_voxels)
    metrics: dict[str, Any] = {"folding_fraction": folding_fraction(det), "sdlogj": sdlogj(det)}
    units = {"folding_fraction": "1", "sdlogj": "1"}
    if mask is not None:
        metrics.update(folding_fraction_mask=folding_fraction(det, mask > 0), sdlogj_mask=sdlogj(det, mask > 0))
        units.update(folding_fraction_mask="1", sdlogj_mask="1")
    extra: dict[str, Any] = {}
    if fixed_labels is not None and before is not None and after is not None:
        lf, lm = labels_present(fixed_labels), labels_present(before)
        both = sorted(lf & lm)
        extra["labels_absent"] = {"fixed_only": sorted(lf - lm), "moving_only": sorted(lm - lf)}
        for tag, lab in (("before", before), ("after", after)):
            d = dice_per_label(lab, fixed_labels, both)
            metrics[f"dice_{tag}"] = d
            metrics[f"dice_macro_{tag}"] = macro_dice(d)
            units[f"dice_{tag}"] = units[f"dice_macro_{tag}"] = "1"
            if hd:
                h = hd95_per_label(lab, fixed_labels, spacing, both)
                metrics[f"hd95_{tag}"] = h
                metrics[f"hd95_macro_{tag}"] = _finite_mean(h)
                units[f"hd95_{tag}"] = units[f"hd95_macro_{tag}"] = "mm"
    return metrics, units, extra


def _boundaries(lab: np.ndarray) -> np.ndarray:
    b = np.zeros(lab.shape, bool)
    b[1:, :] |= lab[1:, :] != lab[:-1, :]
    b[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return b & (lab > 0)


def write_overview(path: Path, fixed: np.ndarray, moving_hdr: np.ndarray, warped: np.ndarray,
                   fixed_labels: np.ndarray | None = None, moving_labels_hdr: np.ndarray | None = None,
                   warped_labels: np.ndarray | None = None) -> Path:
    """Middle slices (three axes) of fixed / moving (header-aligned) / warped, with label contours
    (red: the image's own labels; green on the warped column: the fixed labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("fixed", fixed, fixed_labels), ("moving (header)", moving_hdr, moving_labels_hdr), ("warped", warped, warped_labels)]
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    for r in range(3):
        for c, (name, img, lab) in enumerate(cols):
            idx = img.shape[r] // 2
            sl = np.rot90(np.take(np.nan_to_num(img), idx, axis=r))
            ax = axes[r, c]
            ax.imshow(sl, cmap="gray")
            over = np.zeros(sl.shape + (4,))
            if lab is not None:
                over[np.rot90(_boundaries(np.take(lab, idx, axis=r)))] = (1, 0, 0, 0.9)
            if c == 2 and fixed_labels is not None:
                over[np.rot90(_boundaries(np.take(fixed_labels, idx, axis=r)))] = (0, 1, 0, 0.6)
            ax.imshow(over)
            ax.axis("off")
            if r == 0:
                ax.set_title(name)
    return save_figure(fig, path, dpi=80, bbox_inches="tight")


def _labels_on(result: RegistrationResult, moving: Volume, labels: Volume) -> np.ndarray:
    # Moving labels may have their own affine: map moving image voxels to label voxels first.
    m = np.linalg.inv(labels.affine) @ moving.affine
    return warp_volume(labels.data, apply_matrix(m, torch.from_numpy(result.coords).double()).float(), "nearest")


_GENERIC = {"fixed", "moving", "image", "img", "scan", "t1", "t2", "brain", "input"}


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".mgz", ".gz"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    # A generic file name says nothing about the case: its folder does.
    return f"{Path(path).resolve().parent.name}-{name}" if name.lower() in _GENERIC else name


def case_id(fixed: str | Path, moving: str | Path) -> str:
    """The default case id of a pair: `<moving>_to_<fixed>` from the file names (extensions
    dropped; a generic name such as `moving.nii.gz` is prefixed by its folder's name)."""
    return f"{_stem(moving)}_to_{_stem(fixed)}"


def check_label_pair(fixed_labels: object, moving_labels: object) -> None:
    """Labels are scored only as a pair: one without the other is an error naming the fix."""
    if (fixed_labels is None) != (moving_labels is None):
        given, missing = ("--fixed-labels", "--moving-labels") if moving_labels is None else ("--moving-labels", "--fixed-labels")
        raise ValueError(f"{given} was given without {missing}: Dice needs the labels of both images; "
                         f"pass {missing} too, or neither")


def register_files(fixed: str | Path, moving: str | Path, out: str | Path, *, fixed_labels: str | Path | None = None,
                   moving_labels: str | Path | None = None, fixed_mask: str | Path | None = None,
                   moving_mask: str | Path | None = None, cfg: RegistrationConfig | None = None,
                   model: torch.nn.Module | None = None, model_record: dict[str, Any] | None = None,
                   l2r: bool = False, case: str | None = None, device: str = "cpu", png: bool = True,
                   echo: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Register `moving` -> `fixed` (NIfTI paths), write all outputs to `out`, return the record."""
    cfg = cfg or RegistrationConfig()
    check_label_pair(fixed_labels, moving_labels)
    case = case or case_id(fixed, moving)
    out = Path(out)
    t_all = time.perf_counter()
    fv, mv = load_nifti(fixed), load_nifti(moving)
    fl = load_labels(fixed_labels) if fixed_labels else None
    ml = load_labels(moving_labels) if moving_labels else None
    fm = load_labels(fixed_mask) if fixed_mask else None
    mm = load_labels(moving_mask) if moving_mask else None
    for name, v in (("fixed labels", fl), ("fixed mask", fm)):
        if v is not None and v.data.shape != fv.data.shape:
            raise ValueError(f"{name} shape {v.data.shape} differs from the fixed image's {fv.data.shape}; they must share a grid")
    normalisation = (model_record or {}).get("normalisation")
    res = register_volumes(fv, mv, cfg, model, normalisation, None if fm is None else fm.data, mm, device)
    t_io = time.perf_counter()
    artifacts = {"displacement": "disp.nii.gz", "warped": "warped.nii.gz"}
    save_displacement(res.disp_world, fv.affine, out / "disp.nii.gz", frame="LPS")
    if l2r:
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in fv.data.shape], indexing="ij"), -1)
        save_nifti((res.coords - idx).astype(np.float32), fv.affine, out / "disp_l2r.nii.gz", "synthvox disp pull-back voxels (Learn2Reg)")
        artifacts["displacement_l2r"] = "disp_l2r.nii.gz"
    save_nifti(res.warped.astype(np.float32), fv.affine, out / "warped.nii.gz", "synthvox warped moving image")
    before = after = None
    if ml is not None:
        after = _labels_on(res, mv, ml)
        before = resample_to_grid(ml.data, ml.affine, fv.data.shape, fv.affine, "nearest")
        save_nifti(after.astype(np.int32), fv.affine, out / "warped_labels.nii.gz", "synthvox warped moving labels")
        artifacts["warped_labels"] = "warped_labels.nii.gz"
    metrics, units, extra = registration_metrics(None if fl is None else fl.data, before, after, fv.spacing,
                                                 res.disp_voxels, None if fm is None else fm.data)
    if png:
        mov_hdr = resample_to_grid(np.nan_to_num(mv.data), mv.affine, fv.data.shape, fv.affine)
        write_overview(out / "overview.png", fv.data, mov_hdr, res.warped, None if fl is None else fl.data, before, after)
        artifacts["overview"] = "overview.png"
    secs = dict(res.seconds)
    secs["outputs"] = time.perf_counter() - t_io
    secs["total"] = time.perf_counter() - t_all
    for k, v in secs.items():
        metrics[f"seconds_{k}"] = v
        units[f"seconds_{k}"] = "s"
    ckpt = None
    if cfg.needs_network and model_record is not None:
        ckpt = {"name": str(model_record.get("name")), "sha256": model_record.get("sha256")}
    extra.update(config=asdict(cfg), frame="LPS", direction="moving -> fixed",
                 largest_convex_displacement_voxels=cfg.max_convex_displacement,
                 affine_world=res.affine_world.tolist(), fixed=str(fixed), moving=str(moving),
                 tuned_with_masks=False, masks_used=bool(fm is not None or mm is not None),
                 init=res.info.get("init"), affine=res.info.get("affine"),
                 deformable="diffeomorphic (stationary velocity, scaling and squaring)" if cfg.diffeomorphic
                 else "displacement (ConvexAdam-style)")
    record = make_record(task="registration", method=cfg.features, case=case,
                         metrics=metrics, units=units, checkpoint=ckpt, protocol="cpu" if device == "cpu" else "gpu",
                         device=str(device), labels={} if fl is None else label_names_for(fixed_labels, sorted(labels_present(fl.data))),
                         artifacts=artifacts, extra=extra)
    write_record(record, out / "metrics.json")
    if echo is not None:
        md = metrics.get("dice_macro_after")
        summary = f"Dice {metrics.get('dice_macro_before', float('nan')):.3f} -> {md:.3f}, " if md is not None else ""
        echo(f"{record['case']}: {summary}folding {metrics['folding_fraction']:.2e}, SDlogJ {metrics['sdlogj']:.3f}, "
             f"{secs['total']:.1f} s -> {out}")
    return record


_PAIR_KEYS = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_mask", "moving_mask")


def read_pairs(path: str | Path) -> list[dict[str, Path]]:
    """Pairs from a Learn2Reg-style JSON file, paths resolved relative to the file.

    Accepted forms: a list of pair objects, or an object with a list under `pairs` (or
    Learn2Reg's `registration_val` / `registration_test`). Each pair has `fixed` and `moving`
    and optionally `fixed_labels`, `moving_labels`, `fixed_mask`, `moving_mask`, `case`.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the pairs file ({e})") from None
    if isinstance(data, dict):
        for key in ("pairs", "registration_val", "registration_test"):
            if key in data:
                data = data[key]
                break
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of pairs (or an object with 'pairs')")
    pairs = []
    for n, p in enumerate(data):
        if not isinstance(p, dict) or "fixed" not in p or "moving" not in p:
            raise ValueError(f"{path}: pair {n} needs keys 'fixed' and 'moving', got {p!r}")
        if bool(p.get("fixed_labels")) != bool(p.get("moving_labels")):
            raise ValueError(f"{path}: pair {n} has only one of 'fixed_labels' / 'moving_labels'; give both or neither")
        unknown = set(p) - set(_PAIR_KEYS) - {"case"}
        if unknown:
            raise ValueError(f"{path}: pair {n} has unknown keys {sorted(unknown)}; known: {list(_PAIR_KEYS) + ['case']}")
        q: dict[str, Any] = {k: (path.parent / p[k]).resolve() for k in _PAIR_KEYS if p.get(k)}
        q["case"] = str(p.get("case", f"{n:04d}"))
        pairs.append(q)
    return pairs


def register_batch(pairs_file: str | Path, out: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """`register_files` for every pair of `pairs_file`; pair `case` writes to `out/<case>/`."""
    records = []
    for p in read_pairs(pairs_file):
        case = p.pop("case")
        records.append(register_files(p.pop("fixed"), p.pop("moving"), Path(out) / case, case=case, **p, **kwargs))
    return records
