"""Batched entropic optimal transport for padded cost matrices.

The solver works on a batch ``(B, n, m)`` of padded cost matrices with uniform
masses over each item's valid rows and columns. It is Sinkhorn's algorithm in the
*stabilised scaling* form (Schmitzer, 2019): the plan is kept as
``diag(u) exp((f + g - C) / eps) diag(v)``, where the duals ``f, g`` are refreshed
by an exact log-domain (log-sum-exp) update and the scalings ``u, v`` are updated
by two batched matrix-vector products per iteration. The expensive ``exp`` and
log-sum-exp run only when the scalings drift past a bound (or once per call), so
an iteration costs about as much as POT's exp-domain Sinkhorn while staying as
safe as its log-domain one (no underflow for small ``epsilon``). Duals can be
passed in to warm-start a solve; the fused Gromov-Wasserstein solver uses that
across its outer steps, where the cost changes little from one step to the next.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from espnet_gmot.ot.costs import full_lengths, length_mask

GRADIENT_MODES = ("envelope", "unrolled")

# Scalings outside [1/bound, bound] are folded into the duals and the kernel is
# rebuilt; this keeps every kernel-vector product far from over- and underflow.
_SCALING_BOUND = 1e6


@dataclass
class TransportResult:
    """Result of a batched OT solve.

    Attributes:
        plan: ``(B, n, m)`` coupling, zero on padded cells, in the input dtype.
        value: ``(B,)`` transport objective *without* the entropy term.
        n_iter: Sinkhorn iterations run (over all outer steps for FGW).
        marginal_error: ``(B,)`` L2 norm of ``plan^T 1 - b`` (rows are exact).
        n_outer: mirror-descent steps run (0 for plain Sinkhorn).
    """

    plan: torch.Tensor
    value: torch.Tensor
    n_iter: int
    marginal_error: torch.Tensor
    n_outer: int = 0


@dataclass
class Marginals:
    """Uniform masses of a padded batch and their validity masks."""

    source_mask: torch.Tensor  # (B, n) bool
    target_mask: torch.Tensor  # (B, m) bool
    source_mass: torch.Tensor  # (B, n), 1/n_b on valid rows, 0 on padding
    target_mass: torch.Tensor  # (B, m)

    @classmethod
    def uniform(
        cls,
        source_lengths: torch.Tensor,
        target_lengths: torch.Tensor,
        n: int,
        m: int,
        dtype: torch.dtype,
    ) -> "Marginals":
        source_mask = length_mask(source_lengths, n)
        target_mask = length_mask(target_lengths, m)
        return cls(
            source_mask=source_mask,
            target_mask=target_mask,
            source_mass=source_mask.to(dtype) / source_lengths.to(dtype)[:, None],
            target_mass=target_mask.to(dtype) / target_lengths.to(dtype)[:, None],
        )

    @property
    def pair_mask(self) -> torch.Tensor:
        return self.source_mask[:, :, None] & self.target_mask[:, None, :]

    def column_error(self, plan: torch.Tensor) -> torch.Tensor:
        """L2 norm of the column-marginal violation, per item (as POT measures it)."""
        return torch.linalg.vector_norm(plan.sum(1) - self.target_mass, dim=1)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) solves in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_lengths(
    name: str, lengths: Optional[torch.Tensor], batch: int, max_len: int, device
) -> torch.Tensor:
    """Validate ``lengths`` against a padded size; ``None`` means unpadded."""
    if lengths is None:
        return full_lengths(batch, max_len, device)
    if lengths.dim() != 1 or lengths.size(0) != batch:
        raise ValueError(
            f"{name} must have shape ({batch},), one length per batch item; "
            f"got {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point:
        raise ValueError(f"{name} must be an integer tensor, got {lengths.dtype}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > max_len):
        raise ValueError(
            f"{name} must lie in [1, {max_len}] (empty items have no transport "
            f"plan); got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths.to(device)


def check_solver_options(
    epsilon: float, max_iter: int, tol: float, gradient: str, overrelaxation: float = 1.0
):
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    if not 1.0 <= overrelaxation < 2.0:
        raise ValueError(f"overrelaxation must lie in [1, 2), got {overrelaxation}")


def _masked_logsumexp(
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


def _log_domain_update(
    cost: torch.Tensor,
    marginals: Marginals,
    mask: torch.Tensor,
    source_dual: torch.Tensor,
    target_dual: torch.Tensor,
    epsilon: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One exact Sinkhorn iteration on the duals (columns, then rows)."""
    log_b = torch.log(torch.where(marginals.target_mask, marginals.target_mass, 1.0))
    log_a = torch.log(torch.where(marginals.source_mask, marginals.source_mass, 1.0))
    target_dual = epsilon * (
        log_b
        - _masked_logsumexp((source_dual[:, :, None] - cost) / epsilon, mask, dim=1)
    )
    target_dual = torch.where(marginals.target_mask, target_dual, 0.0)
    source_dual = epsilon * (
        log_a
        - _masked_logsumexp((target_dual[:, None, :] - cost) / epsilon, mask, dim=2)
    )
    source_dual = torch.where(marginals.source_mask, source_dual, 0.0)
    return source_dual, target_dual


def solve_scaling(
    cost: torch.Tensor,
    marginals: Marginals,
    epsilon: float,
    max_iter: int,
    tol: float,
    source_dual: Optional[torch.Tensor] = None,
    target_dual: Optional[torch.Tensor] = None,
    overrelaxation: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Stabilised Sinkhorn on a zero-padded cost; the engine of both solvers.

    Args:
        cost: ``(B, n, m)`` finite cost, zero on padded cells, working dtype.
        marginals: masses and masks of the batch.
        epsilon: entropic regularisation.
        max_iter: maximum number of iterations.
        tol: stop an item once the L2 norm of its column-marginal violation is
            below ``tol``; the batch stops when every item has.
        source_dual, target_dual: optional warm-start duals ``(B, n)``, ``(B, m)``.
        overrelaxation: ``omega`` of over-relaxed Sinkhorn (Thibault et al.,
            2017): ``u <- u^(1 - omega) (a / K v)^omega``; 1 is plain Sinkhorn.

    Returns:
        ``(plan, source_dual, target_dual, n_iter)``; the returned duals
        represent the returned plan and can warm-start the next solve.
    """
    mask = marginals.pair_mask
    a, b = marginals.source_mass, marginals.target_mass
    source_mask, target_mask = marginals.source_mask, marginals.target_mask
    if source_dual is None:
        source_dual = torch.zeros_like(a)
    if target_dual is None:
        target_dual = torch.zeros_like(b)

    def rebuild(f, g, active):
        # Frozen items keep their duals: the kernel then represents their plan
        # exactly and the scalings restart at one, so they stay where they were.
        f_next, g_next = _log_domain_update(cost, marginals, mask, f, g, epsilon)
        f = torch.where(active[:, None], f_next, f)
        g = torch.where(active[:, None], g_next, g)
        exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
        kernel = torch.where(mask, torch.exp(exponent), torch.zeros_like(exponent))
        return f, g, kernel, target_mask.to(cost.dtype)

    active = torch.ones(a.size(0), dtype=torch.bool, device=a.device)
    # After a rebuild the kernel itself is the plan: both scalings are one.
    source_dual, target_dual, kernel, v = rebuild(source_dual, target_dual, active)
    u = source_mask.to(cost.dtype)
    n_iter = 1
    while n_iter < max_iter:
        kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
        u = _relax(u, a / torch.where(source_mask, kv, torch.ones_like(kv)), overrelaxation)
        ktu = torch.bmm(kernel.transpose(1, 2), u[:, :, None]).squeeze(2)
        error = torch.linalg.vector_norm(v * ktu - b, dim=1)
        n_iter += 1
        active = error >= tol
        if not bool(active.any()):
            break
        # Converged items are frozen, so an item's result does not depend on the
        # other items of its batch.
        v_next = _relax(v, b / torch.where(target_mask, ktu, torch.ones_like(ktu)), overrelaxation)
        v = torch.where(active[:, None], v_next, v)
        if not _scalings_bounded(u, v, source_mask, target_mask):
            if bool(torch.isfinite(u).all() and torch.isfinite(v).all()):
                source_dual, target_dual = _absorb(
                    source_dual, target_dual, u, v, marginals, epsilon
                )
            source_dual, target_dual, kernel, v = rebuild(source_dual, target_dual, active)
            u = source_mask.to(cost.dtype)
            n_iter += 1
    # End on a row update, so that rows are exact whichever way the loop stopped.
    kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
    u = a / torch.where(source_mask, kv, torch.ones_like(kv))
    plan = u[:, :, None] * kernel * v[:, None, :]
    source_dual, target_dual = _absorb(
        source_dual, target_dual, u, v, marginals, epsilon
    )
    return plan, source_dual, target_dual, n_iter


def _relax(previous: torch.Tensor, update: torch.Tensor, omega: float) -> torch.Tensor:
    """``previous^(1 - omega) * update^omega``; the same fixed point, fewer steps on
    stiff problems such as the temporal prior's."""
    if omega == 1.0:
        return update
    return previous.clamp_min(1e-38) ** (1.0 - omega) * update**omega


def _scalings_bounded(u, v, source_mask, target_mask) -> bool:
    u = torch.where(source_mask, u, torch.ones_like(u))
    v = torch.where(target_mask, v, torch.ones_like(v))
    low, high = 1.0 / _SCALING_BOUND, _SCALING_BOUND
    return bool(
        (u.min() > low) & (u.max() < high) & (v.min() > low) & (v.max() < high)
    )


def _absorb(f, g, u, v, marginals: Marginals, epsilon: float):
    """Fold the scalings into the duals: ``f += eps log u``, ``g += eps log v``."""
    log_u = torch.log(torch.where(marginals.source_mask, u, torch.ones_like(u)))
    log_v = torch.log(torch.where(marginals.target_mask, v, torch.ones_like(v)))
    return f + epsilon * log_u, g + epsilon * log_v


def sinkhorn(
    cost: torch.Tensor,
    source_lengths: Optional[torch.Tensor] = None,
    target_lengths: Optional[torch.Tensor] = None,
    *,
    epsilon: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-9,
    gradient: str = "envelope",
    overrelaxation: float = 1.0,
) -> TransportResult:
    """Entropic OT with uniform masses over a batch of padded cost matrices.

    Solves, per item ``b``, ``min_{P in Pi(a_b, b_b)} <C_b, P> - epsilon H(P)``
    (POT's ``ot.sinkhorn(a, b, C, epsilon, method="sinkhorn_log")``), with
    ``a_b``, ``b_b`` uniform over the first ``source_lengths[b]`` rows and
    ``target_lengths[b]`` columns. Padded cells may hold anything, ``nan`` and
    ``inf`` included: they are never read.

    Args:
        cost: ``(B, n, m)`` costs; any floating dtype (solved in float32, or in
            float64 for float64 input, with autocast disabled).
        source_lengths, target_lengths: ``(B,)`` valid sizes; ``None`` = unpadded.
        epsilon: entropic regularisation (TOT's alpha~).
        max_iter: maximum Sinkhorn iterations.
        tol: tolerance on the L2 norm of the column-marginal violation.
        gradient: ``"envelope"`` (default): the plan is a constant in the
            backward pass, so ``d value / d cost = plan`` (the envelope theorem);
            ``"unrolled"``: autodiff through the iterations.
        overrelaxation: ``omega`` in ``[1, 2)`` of over-relaxed Sinkhorn; 1 (the
            default) is POT's iteration. The solution does not change.

    Returns:
        :class:`TransportResult` with ``value = <C, P>``.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (batch, n, m), got shape {tuple(cost.shape)}")
    check_solver_options(epsilon, max_iter, tol, gradient, overrelaxation)
    batch, n, m = cost.shape
    source_lengths = check_lengths("source_lengths", source_lengths, batch, n, cost.device)
    target_lengths = check_lengths("target_lengths", target_lengths, batch, m, cost.device)
    dtype = working_dtype(cost.dtype)
    with torch.autocast(device_type=cost.device.type, enabled=False):
        marginals = Marginals.uniform(source_lengths, target_lengths, n, m, dtype)
        mask = marginals.pair_mask
        work_cost = torch.where(mask, cost.to(dtype), torch.zeros((), dtype=dtype, device=cost.device))
        with torch.set_grad_enabled(gradient == "unrolled" and torch.is_grad_enabled()):
            plan, _, _, n_iter = solve_scaling(
                work_cost if gradient == "unrolled" else work_cost.detach(),
                marginals,
                epsilon,
                max_iter,
                tol,
                overrelaxation=overrelaxation,
            )
        value = (work_cost * plan).sum((1, 2))
        error = marginals.column_error(plan.detach())
    return TransportResult(
        plan=plan.to(cost.dtype),
        value=value.to(cost.dtype),
        n_iter=n_iter,
        marginal_error=error,
    )
