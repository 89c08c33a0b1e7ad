"""Feature-based deformable registration (ConvexAdam-style) in world-correct coordinates.

Pipeline (all in the fixed image's voxel grid): a start (`init.py`: the header alignment, or
matched centres of mass / principal axes when the header leaves the foregrounds apart) -> affine
stage (12 parameters, Adam on feature MSE at a coarse level, kept only when it removes over half
of the feature MSE; `affine=False` / `--no-affine` skips it) -> coupled convex discrete optimisation on `grid_sp`-voxel cells searching
+-`disp_hw` cells (default 4 x 4: local displacements up to 16 voxels beyond the affine),
optionally inverse-consistent -> Adam instance optimisation of a displacement grid (features
pooled by `adam_level`, diffusion regulariser, box smoothing; `diffeomorphic=True`: a stationary
velocity field integrated by scaling and squaring). Features: `net`, `mind`
(MIND-SSC, no network), `net+mind` (network features x 0.1 beside MIND-SSC, the reference's
choice), `intensity`. Defaults were tuned without ROI masks; masks are optional.

Speed (160x192x160, 2-core CPU): features are pooled to the finest stage level as soon as
they exist (MIND-SSC on the image pooled by 2 there), the network runs folded and fused (downstream/inference.py), the
convex cost volume is one batched matrix product per offset row, the Adam stage runs on the
principal feature channels (99.9% of the variance), and the iterative stages use one torch
thread (`opt_threads`). Per-stage wall and CPU seconds: `RegistrationResult.seconds` /
`.cpu_seconds`.

Conventions: displacement fields are pull-back (moving point = fixed point + u), on the fixed
grid, in mm; written as ITK 5D vector NIfTI with LPS components (see `run.py`). Direction:
the moving image is warped onto the fixed one.
"""
from .config import FEATURE_KINDS, RegistrationConfig
from .pipeline import RegistrationResult, compute_features, register_volumes
from .run import read_pairs, register_batch, register_files, registration_metrics

__all__ = ["FEATURE_KINDS", "RegistrationConfig", "RegistrationResult", "compute_features", "register_volumes",
           "read_pairs", "register_batch", "register_files", "registration_metrics"]
