"""Plain `webdataset` on synthvox shards: a decoder for `.decode(...)`.

    import webdataset as wds
    from synthvox.api import wds_decoder
    ds = wds.WebDataset("STORE/wds/shard-{000000..000003}.tar", shardshuffle=False).decode(wds_decoder)
    for s in ds:
        s["labels.npy.zst"]   # (D, H, W) uint8|uint16 numpy
        s["views.npy.zst"]    # (V, D, H, W) uint8 numpy (absent in a labels store)
        s["meta.json"]        # dict (webdataset's own json handler)

Or `.map(decode_wds_sample)` on the raw samples for the synthvox sample dict (labels, views,
index, meta); add `.map(views_from_meta)` to paint a labels store's views.
"""
from __future__ import annotations


import numpy as np

from synthvox.pipelines.codecs import decode_array

__all__ = ["wds_decoder"]

_SUFFIX = ".npy.zst"


def wds_decoder(key: str, data: bytes) -> np.ndarray | None:
    """A webdataset decoder handler: `{name}.npy.zst` members -> numpy arrays, None for others.

    `key` is the member's extension as webdataset passes it (".labels.npy.zst" or
    "labels.npy.zst"); the views' plane-delta filter is undone, so arrays equal what
    synthvox's own readers return.
    """
    if not key.endswith(_SUFFIX):
        return None
    name = key[: -len(_SUFFIX)].lstrip(".").rsplit(".", 1)[-1]
    return decode_array(bytes(data) if not isinstance(data, bytes) else data, name)
