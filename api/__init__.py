"""synthvox.api: the user-facing Python API (re-exports of the engine, store readers, checkpoint
loader, features, registration and export; nothing here re-implements them).

    from synthvox.api import SyntheticDataset, StoreDataset, load_model, extract_features, register, wds_decoder

    ds = SyntheticDataset(1000, seed=0, size=64)          # map-style, rendered by index
    ds = StoreDataset("out/store", seed=0)                # iterable over a store, split by rank and worker
    model, record = load_model("bundled")                 # a run dir, a checkpoint dir, "bundled", "random"
    feats = extract_features(model, image, record["normalisation"])   # (C, D, H, W) float32
    result = register("fixed.nii.gz", "moving.nii.gz", model=model, normalisation=record["normalisation"])
    webdataset.WebDataset(urls).decode(wds_decoder)       # arrays, not .npy.zst bytes

See README.md, "Python API", and examples/.
"""
from synthvox.downstream.export import export_model
from synthvox.downstream.io import Volume, load_labels, load_nifti, save_displacement, save_nifti
from synthvox.pipelines.labels import views_from_meta
from synthvox.pipelines.wds_io import decode_wds_sample

from .dataset import StoreDataset, SyntheticDataset, engine_config
from .functions import as_volume, extract_features, load_model, register
from .wds import wds_decoder

__all__ = [
    "SyntheticDataset", "StoreDataset", "engine_config",
    "load_model", "extract_features", "register", "as_volume", "export_model",
    "wds_decoder", "decode_wds_sample", "views_from_meta",
    "Volume", "load_nifti", "load_labels", "save_nifti", "save_displacement",
]
