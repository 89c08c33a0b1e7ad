"""The views' plane-delta filter as a Zarr v3 array-to-array codec, `synthvox.plane_delta`.

Registered with zarr when this module is imported (zarr_io imports it) and through the
`zarr.codecs` entry point of synthvox's packaging, so plain `zarr.open_group(STORE/zarr)` reads
the views wherever synthvox is installed. Without synthvox, zarr refuses the array naming the
codec (it never returns the filtered bytes as if they were the views).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.abc.codec import ArrayArrayCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from .codecs import delta_planes, undelta_planes

__all__ = ["PlaneDelta", "CODEC_NAME"]

CODEC_NAME = "synthvox.plane_delta"


@dataclass(frozen=True)
class PlaneDelta(ArrayArrayCodec):
    """uint8 plane differences along `axis` (codecs.delta_planes); size-preserving."""

    is_fixed_size = True
    axis: int = -3

    def __init__(self, *, axis: int = -3) -> None:
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise TypeError(f"{CODEC_NAME}: axis must be an int, got {axis!r}")
        object.__setattr__(self, "axis", axis)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlaneDelta":
        _, conf = parse_named_configuration(data, CODEC_NAME)
        return cls(**(conf or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": CODEC_NAME, "configuration": {"axis": self.axis}}

    def validate(self, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"{CODEC_NAME}: axis {self.axis} is out of range for an array of {len(shape)} dimensions")
        if np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{CODEC_NAME} works on uint8 arrays, not {dtype}")

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        return chunk_spec

    def _decode_sync(self, chunk_array: Any, chunk_spec: ArraySpec) -> Any:
        a = np.array(chunk_array.as_ndarray_like(), dtype=np.uint8, copy=True)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(undelta_planes(a, self.axis))

    async def _decode_single(self, chunk_array: Any, chunk_spec: ArraySpec) -> Any:
        return self._decode_sync(chunk_array, chunk_spec)

    def _encode_sync(self, chunk_array: Any, chunk_spec: ArraySpec) -> Any:
        a = np.asarray(chunk_array.as_ndarray_like())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(delta_planes(a, self.axis))

    async def _encode_single(self, chunk_array: Any, chunk_spec: ArraySpec) -> Any:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        return input_byte_length


register_codec(CODEC_NAME, PlaneDelta)
