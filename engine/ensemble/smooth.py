"""3x3x3 strict-majority smoothing of a label map (the cheap stand-in for the median filter).

Definition: each voxel takes the label held by at least 14 of the 27 voxels of its 3x3x3
window (edges replicated, as scipy's mode="nearest"); where no label holds a strict
majority the voxel keeps its label.

Relation to the reference's 3x3x3 median: whenever a strict majority exists the median of
the 27 ids IS that label (the 14th smallest value falls inside its run), so both filters
agree on every such voxel; they differ only in windows without a strict majority (junctions
of 3+ labels), where the median returns an id that depends on the arbitrary numbering (often
a label of neither side) and this filter keeps the centre. It also equals the mode filter
wherever a strict majority exists. Tested against scipy's median_filter.

Cost: instead of sorting 27 values per voxel (unfold + median: 1.16 s at 128^3), it uses
separable 3-tap box statistics: max M, min m, sum S and sum of squares Q of the window.
Windows with M == m are uniform. A window holds only the two values {m, M} exactly when
sum (x - m)(M - x) = 0, i.e. Q == (m + M) S - 27 m M; then the count of M is
(S - 27 m) / (M - m) and the majority is M iff S - 27 m >= 14 (M - m). Only the few windows
with 3+ labels are gathered and decided exactly (Boyer-Moore vote, then a count).
"""
from __future__ import annotations

import torch

from .workspace import scratch

__all__ = ["majority3", "majority3_reference"]

_MAJ = 14   # strict majority of 27


def _sep3(x: torch.Tensor, op: str, tag: str = "") -> torch.Tensor:
    """3-tap max / min / sum along every axis of (D, H, W) `x`, edges replicated.

    Ping-pongs between two scratch buffers named `tag` (the result lives in one of them:
    copy it to keep it past the next call with the same tag), or fresh ones without a tag.
    """
    if tag:
        bufs = [scratch(f"{tag}{i}", tuple(x.shape), x.dtype, x.device) for i in range(2)]
    else:
        bufs = [torch.empty_like(x) for _ in range(2)]
    src = x
    for ax in range(3):
        dst = bufs[ax % 2]
        n = src.shape[ax]
        if n == 1:
            dst.copy_(src)
            if op == "sum":
                dst.mul_(3)
            src = dst
            continue
        lo, hi = src.narrow(ax, 0, n - 1), src.narrow(ax, 1, n - 1)
        if op == "sum":
            # interior: x[i-1] + x[i] + x[i+1]; edges replicate (missing neighbour = itself)
            torch.add(lo, hi, out=dst.narrow(ax, 0, n - 1))
            dst.narrow(ax, n - 1, 1).copy_(src.narrow(ax, n - 1, 1)).mul_(2)
            dst.narrow(ax, 1, n - 1).add_(lo)
            dst.narrow(ax, 0, 1).add_(src.narrow(ax, 0, 1))
        else:
            f = torch.maximum if op == "max" else torch.minimum
            f(lo, hi, out=dst.narrow(ax, 0, n - 1))                 # max(x[i], x[i+1])
            dst.narrow(ax, n - 1, 1).copy_(src.narrow(ax, n - 1, 1))
            dn = dst.narrow(ax, 1, n - 1)
            f(dn, lo, out=dn)                                        # ... and x[i-1]
        src = dst
    return src


def _neighbours(x: torch.Tensor, flat_idx: torch.Tensor) -> torch.Tensor:
    """(27, N) labels of the 3x3x3 windows (edges replicated) around flat voxel indices."""
    D, H, W = x.shape
    xp = x
    for ax in range(3):   # replicate-pad by one voxel per side
        n = xp.shape[ax]
        xp = torch.cat([xp.narrow(ax, 0, 1), xp, xp.narrow(ax, n - 1, 1)], ax)
    Hp, Wp = H + 2, W + 2
    ix = torch.int32 if xp.numel() < 2 ** 31 else torch.int64
    z = torch.div(flat_idx, H * W, rounding_mode="floor")
    r = flat_idx - z * (H * W)
    y = torch.div(r, W, rounding_mode="floor")
    p = (z * (Hp * Wp) + y * Wp + (r - y * W)).to(ix)   # window corner in padded coordinates
    d = torch.arange(3, device=x.device, dtype=ix)
    off = (d[:, None, None] * (Hp * Wp) + d[None, :, None] * Wp + d[None, None, :]).reshape(27)
    return xp.reshape(-1).index_select(0, (off[:, None] + p[None, :]).view(-1)).view(27, -1)


def _vote(nb: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Strict-majority label of each column of (27, N) `nb`, else `centre` (exact).

    Boyer-Moore majority vote (its survivor is the only possible strict majority), then a
    count; in place on small buffers (this runs on the few windows holding 3+ labels).
    """
    n = nb.shape[1]
    cand = nb[0].clone()
    cnt = torch.ones(n, dtype=torch.uint8, device=nb.device)
    eq = torch.empty(n, dtype=torch.bool, device=nb.device)
    zero = torch.empty(n, dtype=torch.bool, device=nb.device)
    for j in range(1, nb.shape[0]):
        v = nb[j]
        torch.eq(cnt, 0, out=zero)
        torch.where(zero, v, cand, out=cand)
        torch.eq(v, cand, out=eq)
        e8 = eq.view(torch.uint8)
        cnt.add_(e8).add_(e8).sub_(1)          # +1 on a match, -1 otherwise (never below 0)
    total = torch.zeros(n, dtype=torch.uint8, device=nb.device)
    for j in range(nb.shape[0]):
        torch.eq(nb[j], cand, out=eq)
        total.add_(eq.view(torch.uint8))
    return torch.where(total >= _MAJ, cand, centre)


def majority3(x: torch.Tensor) -> torch.Tensor:
    """The 3x3x3 strict-majority filter of an integer (D, H, W) label map (new tensor, same dtype)."""
    if x.dim() != 3:
        raise ValueError(f"majority3 wants a (D, H, W) label map, got shape {tuple(x.shape)}")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"majority3 wants integer labels, got {x.dtype}")
    mx = _sep3(x, "max", "smooth.max")
    mn = _sep3(x, "min", "smooth.min")
    edge = torch.ne(mx, mn).view(-1).nonzero().squeeze(1)
    out = x.clone()
    if edge.numel() == 0:
        return out
    small = x.dtype == torch.uint8
    # S <= 27 * 255 fits int16; Q and (m + M) S need int32 for uint8 labels, int64 beyond
    wide = torch.int32 if small else torch.int64
    xs = scratch("smooth.xs", tuple(x.shape), torch.int16 if small else wide, x.device)
    S = _sep3(xs.copy_(x), "sum", "smooth.s").view(-1).index_select(0, edge).to(wide)
    xw = scratch("smooth.xw", tuple(x.shape), wide, x.device).copy_(x)
    Q = _sep3(xw.mul_(xw), "sum", "smooth.q").view(-1).index_select(0, edge)
    M = mx.view(-1).index_select(0, edge).to(wide)
    m = mn.view(-1).index_select(0, edge).to(wide)
    two = Q == (m + M) * S - 27 * m * M
    res = torch.where((S - 27 * m) >= _MAJ * (M - m), M, m)
    multi = (~two).nonzero().squeeze(1)
    if multi.numel():
        vox = edge.index_select(0, multi)
        res[multi] = _vote(_neighbours(x, vox), x.view(-1).index_select(0, vox)).to(wide)
    out.view(-1).scatter_(0, edge, res.to(x.dtype))   # unique indices: deterministic
    return out


def majority3_reference(x: torch.Tensor) -> torch.Tensor:
    """Slow, obviously-correct version of `majority3` (for tests): per-voxel counts."""
    D, H, W = x.shape
    idx = torch.arange(D * H * W, device=x.device)
    nb = _neighbours(x, idx).T.long()
    centre = x.reshape(-1).long()
    K = int(x.max()) + 1
    counts = torch.zeros(len(idx), K, dtype=torch.long, device=x.device)
    counts.scatter_add_(1, nb, torch.ones_like(nb))
    best = counts.argmax(1)
    ok = counts.gather(1, best[:, None]).squeeze(1) >= _MAJ
    return torch.where(ok, best, centre).view(D, H, W).to(x.dtype)
