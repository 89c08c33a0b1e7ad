"""Export a checkpoint as the bundled one (`--ckpt bundled`): fp16 weights, record, card, loss plot.

    python -m synthvox.train.bundle RUN_OR_CKPT [--out train/bundled] [--comparison FILE.md]

The bundled directory is a checkpoint directory like any other (model.safetensors, record.json)
plus `CARD.md` (config, steps, data, loss curve, how it compares with random initialisation)
and `loss.png`. No state.pt: the bundle is for downstream use, not for resuming. Weights are
stored in float16 (half the bytes); `load_model` casts them to the model's float32.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from synthvox.core.atomic import atomic_dir

from .checkpoint import BUNDLED_DIR, Checkpoint, CheckpointError, file_sha256, open_checkpoint
from .plot import plot_log

__all__ = ["export_bundle"]


def _card(rec: dict[str, Any], train_cfg: dict[str, Any], comparison: str) -> str:
    m = rec["model"]
    n_params = rec.get("n_params", "?")
    lines = [
        "# The bundled synthvox checkpoint",
        "",
        f"- model: UNet3D {m} ({n_params} parameters), weights in float16",
        f"- trained by: `synthvox pretrain` (this repository's trainer on this repository's engine), step {rec['step']}",
        f"- data: {train_cfg.get('source', '?')} source, engine config hash `{rec.get('engine_config_hash')}`, "
        f"store manifest hash `{rec.get('store_manifest_hash')}`",
        f"- schedule: {train_cfg.get('steps', '?')} steps planned, crop {train_cfg.get('crop')}, batch {train_cfg.get('batch_size')}, "
        f"lr {train_cfg.get('lr')}, Adam beta1 {train_cfg.get('beta1')}, {train_cfg.get('n_voxels')} voxels per view per tap",
        f"- input normalisation: {rec['normalisation']}",
        f"- weights sha256: `{rec['sha256']}`",
        "",
        "![loss curve](loss.png)",
        "",
        "## How it compares with random initialisation",
        "",
        comparison.strip() or "(not measured)",
        "",
    ]
    return "\n".join(lines)


def export_bundle(spec: "str | Path | Checkpoint", out: str | Path = BUNDLED_DIR, comparison: str = "",
                  run_dir: str | Path | None = None) -> Path:
    """Write the bundle of checkpoint `spec` (a spec or a resolved Checkpoint) to `out` atomically; returns `out`."""
    ck = open_checkpoint(spec)
    if ck.is_random or ck.path is None:
        raise CheckpointError("bundle a trained checkpoint, not 'random': pass a run dir or a checkpoint dir")
    src, rec = ck.path, ck.record_dict()
    out = Path(out)
    weights = ck.weights  # read and checked against record.json's sha256
    with atomic_dir(out, overwrite=True) as tmp:
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
        save_file(half, str(tmp / "model.safetensors"))
        rec = dict(rec)
        rec["name"] = f"bundled-{src.name}"
        rec["n_params"] = int(sum(v.numel() for k, v in weights.items() if "running" not in k and v.is_floating_point()))
        rec["weights_dtype"] = "float16"
        rec["sha256"] = file_sha256(tmp / "model.safetensors")
        rec.pop("path", None)
        (tmp / "record.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
        run = Path(run_dir) if run_dir else src.parent.parent
        if (run / "log.jsonl").is_file():
            plot_log(run, tmp / "loss.png")
        (tmp / "CARD.md").write_text(_card(rec, rec.get("train_config") or {}, comparison))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="run dir or checkpoint dir")
    ap.add_argument("--out", default=str(BUNDLED_DIR))
    ap.add_argument("--comparison", help="a Markdown file with the comparison to random initialisation")
    a = ap.parse_args(argv)
    comparison = Path(a.comparison).read_text() if a.comparison else ""
    out = export_bundle(a.ckpt, a.out, comparison)
    print(f"bundled {a.ckpt} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
