"""Run an exported synthvox feature model WITHOUT synthvox: plain PyTorch or ONNX Runtime.

    synthvox export --ckpt bundled --format torchscript --out features.pt     # or --format onnx
    python examples/exported_model.py features.pt image.npy features.npy     # (D, H, W) raw array in

The model normalises the raw intensities itself (min-max per volume, the checkpoint's clip
window) and pads to its divisor; it returns (B, C, D, H, W) float32 features on the input grid.
For a NIfTI file: `nibabel.load(path).get_fdata()` gives the (i, j, k) array to pass.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def run_torchscript(path: str, image: np.ndarray) -> tuple[np.ndarray, dict]:
    import torch

    extra = {"synthvox.json": ""}
    model = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    with torch.inference_mode():
        feats = model(torch.from_numpy(image)[None, None].float())
    return feats[0].numpy(), json.loads(extra["synthvox.json"])


def run_onnx(path: str, image: np.ndarray) -> tuple[np.ndarray, dict]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["synthvox"])
    (feats,) = session.run(None, {"image": image[None, None].astype(np.float32)})
    return feats[0], meta


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit("usage: exported_model.py MODEL.pt|MODEL.onnx IMAGE.npy OUT.npy")
    model, image_path, out = argv
    image = np.load(image_path)
    feats, meta = (run_onnx if model.endswith(".onnx") else run_torchscript)(model, image)
    np.save(out, feats)
    print(f"{meta['checkpoint']['name']}: normalisation {meta['normalisation']}, features {feats.shape}")


if __name__ == "__main__":
    main(sys.argv[1:])
