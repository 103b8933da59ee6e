"""Exact log-domain Sinkhorn updates and epsilon annealing.

A log-domain (log-sum-exp) update of the duals never underflows, whatever
``epsilon``, but costs an ``exp`` per cell. The scaling loop
(:mod:`espnet_gmot.ot.scaling`) runs one only to rebuild its kernel, the
annealing below runs them at large epsilon, and the Newton continuation
(:mod:`espnet_gmot.ot.polish`) starts each of its stages with one; all share
:func:`masked_logsumexp`, which stays finite (forward and backward) on padding.

A cold solve first anneals epsilon (Kosowsky and Yuille, 1994; Schmitzer, 2019;
GeomLoss's and OTT-JAX's epsilon scaling): exact log-domain iterations at
``epsilon * 2^k`` for ``k`` from about ``log2(cost range / epsilon)`` down to 1
(:func:`annealing_stages`, :func:`anneal`), then the iterations at ``epsilon``
itself. The problem and its solution are unchanged; only the starting point of
the last phase is better.

Relaxed marginals (see :mod:`espnet_gmot.ot.problem` for the objective):
Sinkhorn becomes the scaling algorithm of Chizat et al. (2018, Prop. 2 /
Alg. 2): the balanced dual update is damped by ``phi = rho / (rho + eps)``,

    f_i = phi_a eps (log a_i - LSE_j((g_j - C_ij) / eps)),
    g_j = phi_b eps (log b_j - LSE_i((f_i - C_ij) / eps)).

:func:`relaxed_column_target` gives the column sums one more such update would
make, the fixed point against which a relaxed side's error is measured.
"""

import math
from typing import Tuple

import torch

from espnet_gmot.ot.problem import HARD, Marginals, damping, item_cost_range


def masked_logsumexp(
    values: torch.Tensor, mask: torch.Tensor, dim: int
) -> torch.Tensor:
    """log-sum-exp over the masked entries; 0 where a slice has no entry.

    Written so that fully padded slices give neither nan in the forward pass nor
    in the backward pass (``torch.logsumexp`` over all ``-inf`` does).
    """
    values = values.masked_fill(~mask, float("-inf"))
    peak = values.amax(dim, keepdim=True).detach()
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.exp(values - peak).sum(dim, keepdim=True)
    total = torch.where(mask.any(dim, keepdim=True), total, torch.ones_like(total))
    return (peak + torch.log(total)).squeeze(dim)


def log_domain_update(
    cost: torch.Tensor,
    marginals: Marginals,
    mask: torch.Tensor,
    source_dual: torch.Tensor,
    target_dual: torch.Tensor,
    epsilon: float,
    relaxation: Tuple[float, float] = HARD,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One exact Sinkhorn iteration on the duals (columns, then rows), damped by
    ``phi = rho / (rho + eps)`` on a relaxed side (Chizat et al., 2018)."""
    target_dual = log_domain_target_update(
        cost, marginals, mask, source_dual, epsilon, relaxation[1]
    )
    source_dual = log_domain_source_update(
        cost, marginals, mask, target_dual, epsilon, relaxation[0]
    )
    return source_dual, target_dual


def log_domain_target_update(cost, marginals, mask, source_dual, epsilon, rho):
    """``g_j = phi_b eps (log b_j - LSE_i((f_i - C_ij) / eps))``."""
    log_b = torch.log(torch.where(marginals.target_mask, marginals.target_mass, 1.0))
    target_dual = epsilon * (
        log_b
        - masked_logsumexp((source_dual[:, :, None] - cost) / epsilon, mask, dim=1)
    )
    if rho != math.inf:
        target_dual = damping(rho, epsilon) * target_dual
    return torch.where(marginals.target_mask, target_dual, 0.0)


def log_domain_source_update(cost, marginals, mask, target_dual, epsilon, rho):
    """``f_i = phi_a eps (log a_i - LSE_j((g_j - C_ij) / eps))``."""
    log_a = torch.log(torch.where(marginals.source_mask, marginals.source_mass, 1.0))
    source_dual = epsilon * (
        log_a
        - masked_logsumexp((target_dual[:, None, :] - cost) / epsilon, mask, dim=2)
    )
    if rho != math.inf:
        source_dual = damping(rho, epsilon) * source_dual
    return torch.where(marginals.source_mask, source_dual, 0.0)


def relaxed_column_target(cost, marginals, mask, source_dual, epsilon, rho):
    """Column sums after one more column update from ``source_dual``:
    ``b^phi exp((1 - phi) LSE_i((f_i - C_ij) / eps))`` (``b`` for a hard side)."""
    phi = damping(rho, epsilon)
    lse = masked_logsumexp((source_dual[:, :, None] - cost) / epsilon, mask, dim=1)
    log_b = torch.log(torch.where(marginals.target_mask, marginals.target_mass, 1.0))
    return torch.where(marginals.target_mask, torch.exp(phi * log_b + (1.0 - phi) * lse), 0.0)


# Cold solves anneal epsilon only when the cost range exceeds this many epsilons.
ANNEAL_ABOVE = 50.0


def annealing_stages(cost_range: float, epsilon: float, max_iter: int) -> int:
    """How many epsilon-doubling stages a cold solve starts with (0: none).

    Enough for the first stage's epsilon to reach the cost range (where the
    kernel is smooth and one exact iteration lands near the optimum), and at most
    a third of the iteration budget. None when the range spans at most
    :data:`ANNEAL_ABOVE` epsilons: the cold kernel is then far from underflow
    and a warm-up saves no iterations (OT-BERT's cosine cost at epsilon 0.1
    converges in the same number with and without), so its log-sum-exp passes
    would only add time.
    """
    if not math.isfinite(cost_range) or cost_range <= ANNEAL_ABOVE * epsilon:
        return 0
    return max(0, min(math.ceil(math.log2(cost_range / epsilon)), (max_iter - 1) // 3))


def anneal(cost, marginals, mask, source_dual, target_dual, epsilon, stages,
           relaxation=HARD):
    """Exact log-domain iterations at ``epsilon * 2^k``, ``k = stages .. 1``.

    Item ``b`` takes part in the last ``K_b = ceil(log2(range_b / epsilon))`` of
    them (clamped to ``[0, stages]``; 0 for a range within ``ANNEAL_ABOVE``
    epsilons, as :func:`annealing_stages` decides for a batch): it starts where
    its kernel is smooth, whatever the other items' ranges, so its result does
    not depend on its batch. Returns the duals and ``K_b``.
    """
    cost_range = item_cost_range(cost, mask)
    wanted = torch.ceil(torch.log2(cost_range.clamp_min(epsilon) / epsilon))
    wanted = torch.where(cost_range > ANNEAL_ABOVE * epsilon, wanted, 0.0)
    item_stages = torch.nan_to_num(wanted, nan=0.0).clamp(0, stages).long()
    for k in range(stages):
        taking_part = (stages - k <= item_stages)[:, None]
        f_next, g_next = log_domain_update(
            cost, marginals, mask, source_dual, target_dual, epsilon * 2.0 ** (stages - k),
            relaxation,
        )
        source_dual = torch.where(taking_part, f_next, source_dual)
        target_dual = torch.where(taking_part, g_next, target_dual)
    return source_dual, target_dual, item_stages
