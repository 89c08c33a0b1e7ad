"""The store codecs: plane-delta views, zstd members, the Zarr codec seen from plain zarr."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from numcodecs import Zstd

from synthvox.pipelines.codecs import DELTA_KINDS, decode_array, delta_planes, encode_array, undelta_planes
from synthvox.pipelines.manifest import read_manifest

from helpers.stores import run_synth


def _smooth_views(rng: np.random.Generator, shape=(2, 12, 10, 9)) -> np.ndarray:
    """uint8 volumes like views: a smooth ramp plus noise, wrapping at 255."""
    ramp = np.add.outer(np.arange(shape[1]) * 11, np.arange(shape[2] * shape[3]).reshape(shape[2], shape[3]))
    return ((ramp[None] + rng.integers(0, 9, shape)) % 256).astype(np.uint8)


def test_delta_planes_round_trip_and_first_plane_kept():
    v = _smooth_views(np.random.default_rng(0))
    r = delta_planes(v)
    assert r.shape == v.shape and r.dtype == np.uint8
    assert np.array_equal(r[:, 0], v[:, 0])
    assert np.array_equal(r[:, 3], (v[:, 3].astype(int) - v[:, 2]) % 256)  # wraps, never saturates
    assert not np.array_equal(r, v)
    assert np.array_equal(undelta_planes(r.copy()), v)
    for axis in (0, 1, -1):
        assert np.array_equal(undelta_planes(delta_planes(v, axis), axis), v)


def test_delta_refuses_other_dtypes():
    with pytest.raises(TypeError, match="uint8"):
        delta_planes(np.zeros((3, 3, 3), np.uint16))


@pytest.mark.parametrize("kind,dtype", [("labels", np.uint8), ("labels", np.uint16), ("views", np.uint8)])
def test_member_codec_round_trip_gives_writable_owned_arrays(kind, dtype):
    rng = np.random.default_rng(1)
    a = _smooth_views(rng) if kind == "views" else rng.integers(0, 300 if dtype == np.uint16 else 20, (7, 6, 5)).astype(dtype)
    b = encode_array(a, kind)
    assert b[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    out = decode_array(b, kind)
    assert out.dtype == a.dtype and out.shape == a.shape and np.array_equal(out, a)
    assert out.flags.writeable and out.flags.c_contiguous
    # what is inside the frame: .npy of the array itself, or of its plane differences for views
    inner = np.lib.format.read_array(io.BytesIO(bytes(Zstd().decode(b))))
    assert np.array_equal(inner, delta_planes(a) if kind in DELTA_KINDS else a)


def test_content_size_parsed_and_fallback_without_it(monkeypatch):
    import synthvox.pipelines.codecs as codecs

    v = _smooth_views(np.random.default_rng(2))
    b = encode_array(v, "views")
    assert codecs._content_size(b) == len(Zstd().decode(b))
    assert codecs._content_size(b"not zstd") is None
    # a frame written in streaming mode has no content size: decoding takes zstd's own buffer
    monkeypatch.setattr(codecs, "_content_size", lambda data: None)
    out = decode_array(b, "views")
    assert np.array_equal(out, v) and out.flags.writeable


def test_store_members_and_plain_zarr_read_the_views(tmp_path: Path):
    """A real store: tar members hold delta-filtered views; zarr alone (entry point) reads true views."""
    store = tmp_path / "s"
    p = run_synth(store, 4, 2, formats="wds,zarr")
    assert p.returncode == 0, p.stderr[-2000:]
    man = read_manifest(store)
    assert "plane-delta" in man.codecs["wds"]["views"] and "plane-delta" in man.codecs["zarr"]["views"]
    assert "plane-delta" not in man.codecs["wds"]["labels"]
    from synthvox.pipelines import iter_wds_shard

    shard = sorted((store / "wds").glob("*.tar"))[0]
    samples = list(iter_wds_shard(shard))
    with tarfile.open(shard) as tar:
        raw = tar.extractfile(f"{samples[0]['index']:010d}.views.npy.zst").read()
    stored = np.lib.format.read_array(io.BytesIO(bytes(Zstd().decode(raw))))
    assert np.array_equal(stored, delta_planes(samples[0]["views"]))
    code = (
        "import sys, zarr, numpy as np\n"
        "g = zarr.open_group(sys.argv[1], mode='r', zarr_format=3)\n"
        "np.save(sys.argv[2], np.asarray(g['views'][0]))\n"
        "print('synthvox' in sys.modules, any(m.startswith('synthvox') for m in sys.modules))\n"
    )
    out = tmp_path / "v0.npy"
    r = subprocess.run([sys.executable, "-c", code, str(store / "zarr"), str(out)], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(out), samples[0]["views"])
