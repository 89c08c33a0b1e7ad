"""synthvox samples in a MONAI training loop, then the same samples from a store and plain webdataset.

    python examples/train_monai.py                 # tiny: 16^3 volumes, 4 steps, ~35 s on 2 CPU cores
    python examples/train_monai.py --size 64 --steps 200 --workers 4

1. `SyntheticDataset`: map-style, sample i rendered on demand (deterministic in config, seed, i);
   a MONAI UNet learns to segment the label ensemble from one of its random appearances.
2. `StoreDataset`: the same samples written to a store (`synth_shards`), read back split by
   rank and DataLoader worker; they are byte for byte the rendered ones.
3. Plain `webdataset` with `wds_decoder`: arrays, not `.npy.zst` bytes.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import DataLoader

from synthvox.api import StoreDataset, SyntheticDataset, wds_decoder


def to_monai(sample: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The schema sample -> MONAI's dict convention: channel-first float image, integer label."""
    return {
        "image": torch.from_numpy(sample["views"][:1]).float() / 255.0,  # (1, D, H, W), first appearance
        "label": torch.from_numpy(sample["labels"][None].astype(np.int64)),  # (1, D, H, W)
    }


def train(size: int, steps: int, batch: int, workers: int) -> list[float]:
    """A few optimisation steps of a small MONAI UNet with Dice + cross-entropy; the losses."""
    ds = SyntheticDataset(steps * batch, seed=0, size=size, transform=to_monai)
    classes = ds.config.max_labels + 1  # label ids 0..max_labels
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    net = UNet(spatial_dims=3, in_channels=1, out_channels=classes, channels=(8, 16, 32), strides=(2, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for step, b in enumerate(loader):
        opt.zero_grad()
        loss = loss_fn(net(b["image"]), b["label"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        print(f"step {step + 1}/{steps}: DiceCE loss {losses[-1]:.4f}")
    return losses


def from_store(size: int, samples: int, root: Path) -> None:
    """Write a tiny store, read it with StoreDataset and with plain webdataset; check both."""
    import webdataset as wds

    from synthvox.engine.config import EngineConfig
    from synthvox.pipelines import synth_shards

    store = root / "store"
    synth_shards(store, samples, task_size=2, cfg=EngineConfig(size=size), seed=0, workers=0, progress=False)
    rendered = SyntheticDataset(samples, seed=0, size=size)
    seen = []
    for rank in range(2):  # two ranks of a DDP job, each with two loader workers
        ds = StoreDataset(store, seed=0, rank=rank, world_size=2)
        for s in DataLoader(ds, batch_size=None, num_workers=2):
            i = int(s["index"])
            assert np.array_equal(s["views"].numpy(), rendered[i]["views"]), i
            seen.append(i)
    assert sorted(seen) == list(range(samples)), seen  # every sample once per epoch
    print(f"StoreDataset: {samples} samples over 2 ranks x 2 workers, equal to the rendered ones")

    shards = sorted(str(p) for p in (store / "wds").glob("shard-*.tar"))
    for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode(wds_decoder):
        i = int(s["__key__"])
        assert isinstance(s["views.npy.zst"], np.ndarray) and np.array_equal(s["labels.npy.zst"], rendered[i]["labels"])
        assert isinstance(s["meta.json"], dict)  # webdataset's own json handler still runs
    print(f"webdataset + wds_decoder: {len(shards)} shards decode to arrays")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16, help="volume side in voxels (multiple of 4)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the training loop")
    p.add_argument("--store-samples", type=int, default=6, help="samples in the tiny store of part 2 (0: skip it)")
    a = p.parse_args(argv)
    losses = train(a.size, a.steps, a.batch, a.workers)
    assert all(np.isfinite(losses)), losses
    if a.store_samples:
        with tempfile.TemporaryDirectory() as tmp:
            from_store(a.size, a.store_samples, Path(tmp))


if __name__ == "__main__":
    main()
