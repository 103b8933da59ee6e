"""Batched, differentiable optimal transport for padded sequences (pure torch).

Geometry (cost builders), problems and solvers, in the spirit of OTT-JAX and
POT's ``ot.batch``: every function takes padded ``(B, ...)`` tensors plus valid
lengths, and nothing here imports ESPnet. The solvers' settings are one frozen
:class:`SinkhornSettings`: :func:`sinkhorn` and :func:`fused_gromov_wasserstein`
take them as keywords (POT style) and build one; :func:`solve_sinkhorn` and
:func:`solve_fused_gromov_wasserstein` take the object itself.
"""

from espnet_gmot.ot.costs import (
    cosine_cost,
    length_mask,
    pair_mask,
    structure_cost,
    temporal_cost,
)
from espnet_gmot.ot.gromov import fused_gromov_wasserstein, solve_fused_gromov_wasserstein
from espnet_gmot.ot.problem import GRADIENT_MODES, ConvergenceWarning, TransportResult
from espnet_gmot.ot.scaling import SinkhornSettings
from espnet_gmot.ot.sinkhorn import sinkhorn, solve_sinkhorn

__all__ = [
    "GRADIENT_MODES",
    "ConvergenceWarning",
    "SinkhornSettings",
    "TransportResult",
    "cosine_cost",
    "fused_gromov_wasserstein",
    "length_mask",
    "pair_mask",
    "sinkhorn",
    "solve_fused_gromov_wasserstein",
    "solve_sinkhorn",
    "structure_cost",
    "temporal_cost",
]
