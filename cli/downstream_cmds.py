"""`synthvox features`, `register` and `register-batch`: parse arguments, call the library."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["features", "register", "register_batch"]

_CKPT_HELP = "Network: a checkpoint dir, a run dir (its latest), 'bundled' or 'random'."
_NO_VERIFY = click.option("--no-verify-weights", is_flag=True,
                          help="Load a checkpoint whose record.json has no weights hash (sha256), unchecked.")
_FEATURES = click.Choice(["net", "mind", "net+mind", "intensity"])


@click.command("features")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--ckpt", default="bundled", show_default=True, help=_CKPT_HELP)
@click.option("--clip", nargs=2, type=float, default=None, help="Clip window before min-max, e.g. CT: --clip -450 450 (overrides the checkpoint's).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float32", show_default=True,
              help="float16: half-size file (NIfTI-1 has no half floats, so scaled int16, ~1e-4 relative precision).")
@click.option("--pca-png", type=click.Path(dir_okay=False), default=None, help="Write the first three PCs as RGB beside the grey middle slice.")
@click.option("--max-memory", type=float, default=None, help="GiB for whole-volume inference; larger volumes use sliding windows (default: about 6M voxels).")
@click.option("--layout", type=click.Choice(["channels", "vector", "nnunet"]), default="channels", show_default=True,
              help="channels: one 4D file (X, Y, Z, C), the 4th axis marked as channels, not time (nibabel, FSL). "
                   "vector: one 5D file (X, Y, Z, 1, C) with the vector intent, read by ITK, SimpleITK, ANTs and "
                   "ITK-SNAP as C components per voxel. nnunet: C files OUT_0000.nii.gz .. OUT_00NN.nii.gz for "
                   "nnU-Net's multi-channel input (OUT = DIR/CASE).")
@click.option("--device", default="cpu", show_default=True)
@_NO_VERIFY
def features(image: str, out: str, ckpt: str, clip: tuple[float, float] | None, dtype: str, pca_png: str | None,
             max_memory: float | None, layout: str, device: str, no_verify_weights: bool) -> None:
    """Dense features (C, X, Y, Z) of IMAGE, saved to OUT with IMAGE's affine in the chosen --layout."""
    from synthvox.downstream.features import extract_features, save_features, voxels_for_memory, write_pca_png
    from synthvox.downstream.io import load_nifti
    from synthvox.downstream.network import load_network

    model, rec = load_network(ckpt, device, echo=click.echo, verify_weights=not no_verify_weights)
    vol = load_nifti(image)
    norm = dict(rec.get("normalisation") or {"kind": "minmax", "clip": None})
    if clip is not None:
        norm["clip"] = list(clip)
    feats = extract_features(model, vol.data, norm, device, None if max_memory is None else voxels_for_memory(max_memory))
    # NIfTI-1 has no half floats: "float16" stores 2-byte scaled integers (read back as float).
    paths = save_features(feats, vol.affine, out, layout, f"synthvox features {rec.get('name', ckpt)}"[:79],
                          on_disk="int16" if dtype == "float16" else None)
    if pca_png:
        write_pca_png(vol.data, feats, pca_png)
    where = out if len(paths) == 1 else f"{paths[0]} .. {paths[-1].name} ({len(paths)} files)"
    click.echo(f"features {tuple(feats.shape)} ({layout}) -> {where}")


def _config(features_kind: str, no_affine: bool, init: str = "auto", diffeomorphic: bool = False):
    from synthvox.downstream.registration import RegistrationConfig

    return RegistrationConfig(features=features_kind, affine=not no_affine, init=init, diffeomorphic=diffeomorphic)


_INIT = click.Choice(["auto", "header", "com", "moments"])
_INIT_HELP = ("Start: header (as the affines say), com (centres of mass), moments (plus principal axes); auto: "
              "header unless the foregrounds barely overlap, then the better of com/moments.")
_DIFFEO_HELP = "Diffeomorphic output: a stationary velocity field integrated by scaling and squaring (no folding)."


def _network(cfg, ckpt: str, device: str, verify_weights: bool = True):
    if not cfg.needs_network:
        click.echo(f"features {cfg.features}: no checkpoint needed")
        return None, None
    from synthvox.downstream.network import load_network

    return load_network(ckpt, device, echo=click.echo, verify_weights=verify_weights)


@click.command("register")
@click.option("--fixed", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--moving", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--fixed-labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--moving-labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--fixed-mask", type=click.Path(exists=True, dir_okay=False), help="Optional ROI on the fixed grid (defaults were tuned without masks).")
@click.option("--moving-mask", type=click.Path(exists=True, dir_okay=False))
@click.option("--ckpt", default="bundled", show_default=True, help=_CKPT_HELP + " Not needed for mind/intensity.")
@click.option("--features", "features_kind", type=_FEATURES, default="net+mind", show_default=True)
@click.option("--no-affine", is_flag=True, help="Skip the affine stage (it is also dropped when it barely helps).")
@click.option("--init", type=_INIT, default="auto", show_default=True, help=_INIT_HELP)
@click.option("--diffeomorphic", is_flag=True, help=_DIFFEO_HELP)
@click.option("--name", default=None, help="Case id in stdout and metrics.json (default: <moving>_to_<fixed> from the file names).")
@click.option("--l2r", is_flag=True, help="Also write the Learn2Reg voxel displacement (disp_l2r.nii.gz).")
@click.option("--no-png", is_flag=True, help="Skip overview.png.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@_NO_VERIFY
def register(fixed: str, moving: str, fixed_labels: str | None, moving_labels: str | None, fixed_mask: str | None,
             moving_mask: str | None, ckpt: str, features_kind: str, no_affine: bool, init: str, diffeomorphic: bool,
             name: str | None, l2r: bool, no_png: bool, device: str, out: str, no_verify_weights: bool) -> None:
    """Warp MOVING onto FIXED (moving -> fixed). Writes disp.nii.gz (pull-back, fixed grid, mm,
    ITK 5D, LPS), warped.nii.gz, warped_labels.nii.gz, metrics.json and overview.png to OUT."""
    from synthvox.downstream.registration import register_files

    from synthvox.downstream.registration.run import check_label_pair

    check_label_pair(fixed_labels, moving_labels)
    cfg = _config(features_kind, no_affine, init, diffeomorphic)
    model, rec = _network(cfg, ckpt, device, not no_verify_weights)
    register_files(fixed, moving, out, fixed_labels=fixed_labels, moving_labels=moving_labels, fixed_mask=fixed_mask,
                   moving_mask=moving_mask, cfg=cfg, model=model, model_record=rec, l2r=l2r, case=name, device=device,
                   png=not no_png, echo=click.echo)


@click.command("register-batch")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False))
@click.option("--ckpt", default="bundled", show_default=True, help=_CKPT_HELP + " Not needed for mind/intensity.")
@click.option("--features", "features_kind", type=_FEATURES, default="net+mind", show_default=True)
@click.option("--no-affine", is_flag=True)
@click.option("--init", type=_INIT, default="auto", show_default=True, help=_INIT_HELP)
@click.option("--diffeomorphic", is_flag=True, help=_DIFFEO_HELP)
@click.option("--l2r", is_flag=True)
@click.option("--no-png", is_flag=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@_NO_VERIFY
def register_batch(pairs: str, ckpt: str, features_kind: str, no_affine: bool, init: str, diffeomorphic: bool, l2r: bool,
                   no_png: bool, device: str, out: str, no_verify_weights: bool) -> None:
    """Register every pair of PAIRS (JSON: a list of {fixed, moving, fixed_labels?, moving_labels?,
    fixed_mask?, moving_mask?, case?}, or {"pairs": [...]}; paths relative to the file). Each
    moving image is warped onto its fixed image (moving -> fixed); pair CASE writes OUT/CASE/."""
    from synthvox.downstream.registration import register_batch as run_batch

    cfg = _config(features_kind, no_affine, init, diffeomorphic)
    model, rec = _network(cfg, ckpt, device, not no_verify_weights)
    records = run_batch(pairs, out, cfg=cfg, model=model, model_record=rec, l2r=l2r, device=device,
                        png=not no_png, echo=click.echo)
    click.echo(f"{len(records)} pairs -> {Path(out)}")
