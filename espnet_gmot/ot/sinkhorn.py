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

The iteration loop stays on the device: every per-item decision (freezing a
converged item, refusing a step that would leave the scalings' safe range,
flagging a kernel rebuild) is a masked tensor operation, and the host reads a
value only every ``check_every`` iterations (to stop, or rebuild) and once at the
end, all through :func:`espnet_gmot.ot.host.to_host`.

A cold solve first anneals epsilon (Kosowsky and Yuille, 1994; Schmitzer, 2019;
GeomLoss's and OTT-JAX's epsilon scaling): exact log-domain iterations at
``epsilon * 2^k`` for ``k`` from about ``log2(cost range / epsilon)`` down to 1,
then the iterations at ``epsilon`` itself. The problem and its solution are
unchanged; only the starting point of the last phase is better.

Sinkhorn still converges slowly on the temporal prior (TOT eq. 19): the plan is
a thin band along the diagonal and information moves one token per iteration
(measured: relative marginal errors of 1e-3 to 1e-2 after 2000 iterations at
epsilon 0.05-0.1). Items still unconverged at ``max_iter`` therefore get a few
Newton steps on the semi-dual (``_newton_polish``), which reach the same optimum
in 1-30 steps at the papers' settings (epsilon 0.05-0.5, temporal_weight 0.5,
up to 1500 frames and 40 tokens). At epsilon 0.01 (the TOT paper's) rows are
nearly one-hot and that polish stalls; the items it leaves unconverged are
solved again by Newton steps along the epsilon-scaling path, in float64
(``_newton_continuation``). An item that still misses its marginals is
reported once per setting with a :class:`ConvergenceWarning`.

Relaxed marginals (unbalanced and semi-relaxed OT). With a KL weight ``rho``
per side (``marginal_relaxation``, POT's ``reg_m``) the solver minimises

    <C, P> + eps KL(P | 1 1^T) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)

(POT's ``ot.unbalanced.sinkhorn_unbalanced(..., reg_type="entropy")``), where
``rho = inf`` is the hard constraint (the balanced problem, solved by the same
code as before) and ``rho = 0`` leaves that side free. Sinkhorn becomes the
scaling algorithm of Chizat et al. (2018, Prop. 2 / Alg. 2): the balanced dual
update is damped by ``phi = rho / (rho + eps)``,

    f_i = phi_a eps (log a_i - LSE_j((g_j - C_ij) / eps)),
    g_j = phi_b eps (log b_j - LSE_i((f_i - C_ij) / eps)),

in stabilised form ``u = (a / K v)^phi_a exp(-f / (eps + rho_a))`` (POT's
``sinkhorn_stabilized_unbalanced``). At the fixed point a relaxed side's
marginal is ``a exp(-f / rho_a)``, not ``a``, so "converged" cannot mean "on
the marginal". For every side it means instead that one more update leaves the
plan's marginal in place: the error is the L2 norm of the change one column
update would make to the column sums (rows end on an exact update), which for
a hard side is exactly the balanced solver's ``||P^T 1 - b||``. The update is
a contraction of rate ``max(phi)`` (Chizat et al., 2018), slow along one
direction, the total mass, when ``rho >> eps``: at every check point the duals
are therefore shifted by the optimal constant ``(f + lam, g - lam)``, which
leaves the plan unchanged (translation-invariant Sinkhorn, Sejourne et al.,
2022; measured: 63 instead of 17,753 iterations at ``rho / eps = 2000``). The
Newton polish, which solves the balanced semi-dual, is used only when both
sides are hard.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from espnet_gmot.ot.costs import (
    InputCheck,
    Lengths,
    check_lengths,
    length_mask,
    working_dtype,
)
from espnet_gmot.ot.host import to_host

GRADIENT_MODES = ("envelope", "unrolled")

# Scalings stay inside [1/bound, bound]: a step is clamped to it, and the item's
# scalings are folded into its duals (kernel rebuilt) at the next check point;
# this keeps kernel-vector products far from over- and underflow.
_LOG_SCALING_BOUND = math.log(1e6)

# Host reads (the stop and rebuild decisions) every this many iterations where a
# read drains the device's queue: on a GPU an iteration of the papers' batch is
# a handful of kernel launches (tens of microseconds), so reading every
# iteration would stall the device 200 times per solve, while 10 keeps 20 reads
# per 200 iterations. On the CPU a read costs no synchronisation, only its own
# few small ops (tens of microseconds), while a fixed cadence runs up to k - 1
# iterations past convergence: there ``check_every=None`` (the default) reads
# adaptively (:class:`CheckCadence`), at most every DEVICE_CHECK_EVERY
# iterations (bench/bench_ot.py's cadence table measures both).
DEVICE_CHECK_EVERY = 10

# Relaxed marginals: the duals are translated (and the kernel rebuilt) every
# this many iterations, whatever the read cadence (a rebuild costs an exp of the
# whole kernel; the translation only needs to keep up with the slow mass mode).
TRANSLATE_EVERY = 10


class CheckCadence:
    """When the scaling loop next reads the host.

    A fixed ``check_every``, or (``None`` on the CPU) an adaptive one: Sinkhorn
    converges linearly, so the rate between the last two reads of the worst
    active error predicts the iteration where it falls below ``tol``; the next
    read is there, within ``[1, DEVICE_CHECK_EVERY]``. ``None`` elsewhere is
    ``DEVICE_CHECK_EVERY``.
    """

    def __init__(self, check_every: Optional[int], device: torch.device, tol: float):
        self.adaptive = check_every is None and device.type == "cpu"
        self.fixed = check_every if check_every is not None else DEVICE_CHECK_EVERY
        self.tol = tol
        self.interval = 1 if self.adaptive else self.fixed
        self._last_error = math.nan

    def next_interval(self, worst_error: float) -> int:
        """After a read that saw ``worst_error`` (the largest active item's)."""
        if self.adaptive:
            previous, self._last_error = self._last_error, worst_error
            log_rate = (
                math.log(worst_error / previous) / self.interval
                if 0 < worst_error < previous else 0.0
            )
            if log_rate < 0 and self.tol > 0:
                needed = math.log(self.tol / worst_error) / log_rate
                self.interval = int(min(max(math.ceil(needed), 1), DEVICE_CHECK_EVERY))
            else:  # no rate yet: read again at once; no progress (or nan): back off
                first = math.isnan(previous) and not math.isnan(worst_error)
                self.interval = 1 if first else DEVICE_CHECK_EVERY
        return self.interval


# A solve counts as unconverged when an item's column-marginal error exceeds
# both ``tol`` and this share of the marginal's own L2 norm, ``||b|| = 1/sqrt(m)``.
UNCONVERGED_RELATIVE_ERROR = 1e-3


# Newton steps after an unconverged Sinkhorn phase (each costs about as much as
# 10-20 Sinkhorn iterations, and runs only when Sinkhorn hit its cap).
DEFAULT_NEWTON_STEPS = 30

# Newton polish: no dual moves by more than this many epsilon in one step, and
# these fractions of the step are tried.
_NEWTON_TRUST = 10.0
_NEWTON_STEP_LENGTHS = (0.01, 0.1, 0.25, 0.5, 1.0)


# KL weights ``(rho_a, rho_b)`` of the source and target marginal constraints.
HARD = (math.inf, math.inf)
Relaxation = Union[float, Tuple[float, float]]


def relaxation_pair(marginal_relaxation: Relaxation) -> Tuple[float, float]:
    """``marginal_relaxation`` as ``(rho_a, rho_b)``: one number for both sides,
    or a (source, target) pair, each in ``[0, inf]`` (POT's ``reg_m``)."""
    if isinstance(marginal_relaxation, (int, float)):
        pair = (marginal_relaxation, marginal_relaxation)
    else:
        pair = tuple(marginal_relaxation)
    if len(pair) != 2 or not all(
        isinstance(rho, (int, float)) and not isinstance(rho, bool) and rho >= 0
        for rho in pair
    ):
        raise ValueError(
            "marginal_relaxation must be a number or a (source, target) pair of numbers "
            "in [0, inf] (inf: hard constraint, 0: free marginal), got "
            f"{marginal_relaxation!r}"
        )
    return float(pair[0]), float(pair[1])


def damping(rho: float, epsilon: float) -> float:
    """``phi = rho / (rho + eps)`` of Chizat et al. (2018); 1 for a hard side."""
    return 1.0 if rho == math.inf else rho / (rho + epsilon)


class ConvergenceWarning(UserWarning):
    """An OT solve ended at its iteration cap far from its marginals."""


_WARNED_SETTINGS = set()


@dataclass
class TransportResult:
    """Result of a batched OT solve.

    Attributes:
        plan: ``(B, n, m)`` coupling, zero on padded cells, in the input dtype.
        value: ``(B,)`` transport objective *without* the entropy term.
        n_iter: Sinkhorn iterations run (the most of any item, annealing
            included; over all outer steps for FGW).
        marginal_error: ``(B,)`` L2 norm of ``plan^T 1 - b`` (rows are exact);
            with a relaxed token (column) side, of ``plan^T 1`` minus the
            column sums one more update would give (0 at the fixed point).
        n_outer: mirror-descent steps run (0 for plain Sinkhorn).
        unconverged: items whose (finite) marginal error stayed above
            ``max(tol, 1e-3 ||b||)`` (0 for a converged solve).
        n_newton: Newton steps taken after Sinkhorn hit its cap (the most of
            any item; over all outer steps for FGW).
    """

    plan: torch.Tensor
    value: torch.Tensor
    n_iter: int
    marginal_error: torch.Tensor
    n_outer: int = 0
    unconverged: int = 0
    n_newton: int = 0


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
        # clamp: masses of an invalid (empty) item stay finite until it is reported
        return cls(
            source_mask=source_mask,
            target_mask=target_mask,
            source_mass=source_mask.to(dtype) / source_lengths.clamp_min(1).to(dtype)[:, None],
            target_mass=target_mask.to(dtype) / target_lengths.clamp_min(1).to(dtype)[:, None],
        )

    @property
    def pair_mask(self) -> torch.Tensor:
        return self.source_mask[:, :, None] & self.target_mask[:, None, :]

    def column_error(self, plan: torch.Tensor) -> torch.Tensor:
        """L2 norm of the column-marginal violation, per item (as POT measures it)."""
        return torch.linalg.vector_norm(plan.sum(1) - self.target_mass, dim=1)


@dataclass
class PaddedProblem:
    """Checked inputs in the working dtype, padding zeroed (shared by both solvers)."""

    marginals: Marginals
    cost: torch.Tensor  # (B, n, m)
    structures: Tuple[torch.Tensor, ...]  # FGW's (B, n, n), (B, m, m); () for OT
    source_lengths: torch.Tensor
    target_lengths: torch.Tensor
    cost_range: float  # largest max - min of an item's valid costs
    structure_max: Tuple[float, ...]  # largest |entry| of each structure


def prepare_problem(
    cost: torch.Tensor,
    source_lengths: Optional[Lengths],
    target_lengths: Optional[Lengths],
    check_finite: bool,
    structures: Sequence[Tuple[str, torch.Tensor]] = (),
) -> PaddedProblem:
    """Check the inputs (one host read) and cast them to the working dtype.

    Call with autocast disabled. Padded cells are replaced by zeros *before* any
    arithmetic, so whatever they hold (nan, inf) reaches no result or gradient.
    """
    batch, n, m = cost.shape
    check = InputCheck()
    source_lengths = check_lengths("source_lengths", source_lengths, batch, n, cost.device, check)
    target_lengths = check_lengths("target_lengths", target_lengths, batch, m, cost.device, check)
    dtype = working_dtype(cost.dtype)
    zero = torch.zeros((), dtype=dtype, device=cost.device)
    marginals = Marginals.uniform(source_lengths, target_lengths, n, m, dtype)
    mask = marginals.pair_mask
    work_cost = torch.where(mask, cost.to(dtype), zero)
    squares = {
        "source": marginals.source_mask[:, :, None] & marginals.source_mask[:, None, :],
        "target": marginals.target_mask[:, :, None] & marginals.target_mask[:, None, :],
    }
    work_structures = tuple(
        torch.where(squares[side], structure.to(dtype), zero)
        for side, (_, structure) in zip(("source", "target"), structures)
    )
    if check_finite:
        check.add_finite("cost", work_cost)
        for (name, _), work in zip(structures, work_structures):
            check.add_finite(name, work)
    check.add_value("cost_range", item_cost_range(work_cost, mask).max() if batch else zero)
    for i, work in enumerate(work_structures):
        check.add_value(f"structure_max{i}", work.detach().abs().amax() if batch else zero)
    extra = check.read()
    return PaddedProblem(
        marginals=marginals,
        cost=work_cost,
        structures=work_structures,
        source_lengths=source_lengths,
        target_lengths=target_lengths,
        cost_range=extra["cost_range"],
        structure_max=tuple(extra[f"structure_max{i}"] for i in range(len(structures))),
    )


def item_cost_range(cost: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``max - min`` of each item's valid costs, ``(B,)``, on the device."""
    detached = cost.detach()
    top = detached.masked_fill(~mask, float("-inf")).amax((1, 2))
    bottom = detached.masked_fill(~mask, float("inf")).amin((1, 2))
    return top - bottom


def annealing_stages(cost_range: float, epsilon: float, max_iter: int) -> int:
    """How many epsilon-doubling stages a cold solve starts with (0: none).

    Enough for the first stage's epsilon to reach the cost range (where the
    kernel is smooth and one exact iteration lands near the optimum), and at most
    a third of the iteration budget.
    """
    if not math.isfinite(cost_range) or cost_range <= epsilon:
        return 0
    return max(0, min(math.ceil(math.log2(cost_range / epsilon)), (max_iter - 1) // 3))


def finish_result(
    problem: PaddedProblem,
    plan: torch.Tensor,
    value: torch.Tensor,
    item_iters: torch.Tensor,
    out_dtype: torch.dtype,
    tol: float,
    setting: Dict[str, object],
    n_outer: int = 0,
    item_newton: Optional[torch.Tensor] = None,
    column_target: Optional[torch.Tensor] = None,
) -> TransportResult:
    """The result in the caller's dtype, and the one host read at a solve's end.

    Reads the iteration count and the convergence summary together; warns once
    per process and setting when an item ended far from its marginals.
    ``column_target``: the column sums the fixed point asks for (a relaxed
    target side, see the module docstring); ``None``: the hard marginal ``b``.
    """
    marginals = problem.marginals
    if column_target is None:
        error = marginals.column_error(plan.detach())
    else:
        error = torch.linalg.vector_norm(plan.detach().sum(1) - column_target.detach(), dim=1)
    norm_b = torch.linalg.vector_norm(marginals.target_mass, dim=1)
    threshold = torch.clamp(UNCONVERGED_RELATIVE_ERROR * norm_b, min=tol)
    # A non-finite error comes from non-finite inputs let through with
    # check_finite=False (an AMP overflow): the loss shows it, and it must not use
    # up the once-per-setting warning meant for real non-convergence.
    unconverged = torch.isfinite(error) & (error > threshold)
    relative = torch.where(unconverged, error / norm_b.clamp_min(1e-30), -1.0)
    if item_newton is None:
        item_newton = torch.zeros_like(item_iters)
    if plan.size(0) == 0:
        summary = [0.0] * 6
    else:
        # index_select, not t[index]: indexing by a 0-dim tensor reads it on the host
        worst = relative.argmax().view(1)
        summary = to_host(
            torch.cat(
                (
                    item_iters.max().view(1).to(torch.float64),
                    unconverged.sum().view(1).to(torch.float64),
                    error.index_select(0, worst).to(torch.float64),
                    problem.source_lengths.index_select(0, worst).to(torch.float64),
                    problem.target_lengths.index_select(0, worst).to(torch.float64),
                    item_newton.max().view(1).to(torch.float64),
                )
            )
        )
    n_iter, n_unconverged = int(summary[0]), int(summary[1])
    if n_unconverged:
        warn_unconverged(
            setting, n_unconverged, plan.size(0), summary[2], int(summary[3]),
            int(summary[4]), n_iter, problem.cost_range,
        )
    return TransportResult(
        plan=plan.to(out_dtype),
        value=value.to(out_dtype),
        n_iter=n_iter,
        marginal_error=error,
        n_outer=n_outer,
        unconverged=n_unconverged,
        n_newton=int(summary[5]),
    )


def warn_unconverged(
    setting: Dict[str, object],
    count: int,
    batch: int,
    worst_error: float,
    frames: int,
    tokens: int,
    iterations: int,
    cost_range: float,
) -> None:
    """Warn once per process and setting that couplings are not transport plans."""
    key = tuple(sorted(setting.items()))
    if key in _WARNED_SETTINGS:
        return
    _WARNED_SETTINGS.add(key)
    named = ", ".join(f"{name}={value}" for name, value in setting.items())
    missed = (
        "are short of their fixed point (the token marginal still moves)"
        if "marginal_relaxation" in setting
        else "still miss their token marginal"
    )
    warnings.warn(
        f"optimal transport did not converge: {count} of {batch} items {missed} "
        f"after {iterations} Sinkhorn iterations (worst: "
        f"L2 error {worst_error:.3g} on {frames} frames x {tokens} tokens; cost "
        f"range {cost_range:.3g}) with {named}. Their couplings are not transport "
        f"plans. Raise the iteration budget (inner_iter / max_iter) or epsilon, or "
        f"lower the cost's scale (temporal_weight); overrelaxation 1.5-1.9 also "
        f"speeds up stiff problems. Shown once per setting.",
        ConvergenceWarning,
        stacklevel=3,
    )


def check_solver_options(
    epsilon: float,
    max_iter: int,
    tol: float,
    gradient: str,
    overrelaxation: float = 1.0,
    check_every: Optional[int] = None,
    newton_steps: int = 0,
    marginal_relaxation: Relaxation = math.inf,
) -> Tuple[float, float]:
    """Checks the options shared by both solvers; returns ``(rho_a, rho_b)``."""
    relaxation = relaxation_pair(marginal_relaxation)
    if not (isinstance(epsilon, (int, float)) and 0 < epsilon < math.inf):
        raise ValueError(f"epsilon must be > 0 and finite, got {epsilon}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not 0 <= tol < math.inf:
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    if not 1.0 <= overrelaxation < 2.0:
        raise ValueError(f"overrelaxation must lie in [1, 2), got {overrelaxation}")
    if not (check_every is None or (isinstance(check_every, int) and check_every >= 1)):
        raise ValueError(f"check_every must be None or an integer >= 1, got {check_every!r}")
    if not (isinstance(newton_steps, int) and newton_steps >= 0):
        raise ValueError(f"newton_steps must be an integer >= 0, got {newton_steps!r}")
    return relaxation


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
    relaxation: Tuple[float, float] = HARD,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One exact Sinkhorn iteration on the duals (columns, then rows), damped by
    ``phi = rho / (rho + eps)`` on a relaxed side (Chizat et al., 2018)."""
    target_dual = _log_domain_target_update(
        cost, marginals, mask, source_dual, epsilon, relaxation[1]
    )
    source_dual = _log_domain_source_update(
        cost, marginals, mask, target_dual, epsilon, relaxation[0]
    )
    return source_dual, target_dual


def _log_domain_target_update(cost, marginals, mask, source_dual, epsilon, rho):
    """``g_j = phi_b eps (log b_j - LSE_i((f_i - C_ij) / eps))``."""
    log_b = torch.log(torch.where(marginals.target_mask, marginals.target_mass, 1.0))
    target_dual = epsilon * (
        log_b
        - _masked_logsumexp((source_dual[:, :, None] - cost) / epsilon, mask, dim=1)
    )
    if rho != math.inf:
        target_dual = damping(rho, epsilon) * target_dual
    return torch.where(marginals.target_mask, target_dual, 0.0)


def _log_domain_source_update(cost, marginals, mask, target_dual, epsilon, rho):
    """``f_i = phi_a eps (log a_i - LSE_j((g_j - C_ij) / eps))``."""
    log_a = torch.log(torch.where(marginals.source_mask, marginals.source_mass, 1.0))
    source_dual = epsilon * (
        log_a
        - _masked_logsumexp((target_dual[:, None, :] - cost) / epsilon, mask, dim=2)
    )
    if rho != math.inf:
        source_dual = damping(rho, epsilon) * source_dual
    return torch.where(marginals.source_mask, source_dual, 0.0)


def _relaxed_column_target(cost, marginals, mask, source_dual, epsilon, rho):
    """Column sums after one more column update from ``source_dual``:
    ``b^phi exp((1 - phi) LSE_i((f_i - C_ij) / eps))`` (``b`` for a hard side)."""
    phi = damping(rho, epsilon)
    lse = _masked_logsumexp((source_dual[:, :, None] - cost) / epsilon, mask, dim=1)
    log_b = torch.log(torch.where(marginals.target_mask, marginals.target_mass, 1.0))
    return torch.where(marginals.target_mask, torch.exp(phi * log_b + (1.0 - phi) * lse), 0.0)


@dataclass(frozen=True)
class ScalingOptions:
    """How :func:`solve_scaling` iterates: everything but the problem and its warm start.

    Attributes:
        epsilon: entropic regularisation.
        max_iter: maximum number of iterations (annealing stages included).
        tol: an item is frozen once the L2 norm of its column-marginal violation
            is below ``tol``; the batch stops at the first check point where
            every item is frozen.
        overrelaxation: ``omega`` of over-relaxed Sinkhorn (Thibault et al.,
            2017): ``u <- u^(1 - omega) (a / K v)^omega``; 1 is plain Sinkhorn.
        check_every: iterations between host reads (stop / rebuild decisions);
            ``None``: by device (:class:`CheckCadence`).
        anneal_stages: epsilon-scaling stages of a cold start, see the module
            docstring; each item runs ``ceil(log2(its cost range / epsilon))`` of
            them (at most this many), the last ones, so its path does not depend
            on the other items of the batch. Ignored on a warm start.
        newton_steps: at most this many Newton steps (:func:`_newton_polish`)
            for the items still unconverged after ``max_iter`` iterations
            (balanced problems only); on a cold solve with annealing, items
            still unconverged after them are solved again along the epsilon
            path (:func:`_newton_continuation`).
        relaxation: ``(rho_a, rho_b)`` KL weights of the marginals (``inf``:
            hard); see the module docstring for the update and the error.
    """

    epsilon: float
    max_iter: int
    tol: float
    overrelaxation: float = 1.0
    check_every: Optional[int] = None
    anneal_stages: int = 0
    newton_steps: int = 0
    relaxation: Tuple[float, float] = HARD


@dataclass
class ScalingSolve:
    """What :func:`solve_scaling` returns; the duals represent the plan and can
    warm-start the next solve."""

    plan: torch.Tensor
    source_dual: torch.Tensor
    target_dual: torch.Tensor
    item_iters: torch.Tensor  # (B,) iterations each item ran (device, no host read)
    steps: int  # iterations the batch ran (host)
    item_newton: torch.Tensor  # (B,) Newton steps each item took
    # (B, m) column sums the fixed point asks for; None: the hard marginal b
    column_target: Optional[torch.Tensor] = None


def solve_scaling(
    cost: torch.Tensor,
    marginals: Marginals,
    options: ScalingOptions,
    source_dual: Optional[torch.Tensor] = None,
    target_dual: Optional[torch.Tensor] = None,
) -> ScalingSolve:
    """Stabilised Sinkhorn on a zero-padded cost; the engine of both solvers.

    Args:
        cost: ``(B, n, m)`` finite cost, zero on padded cells, working dtype.
        marginals: masses and masks of the batch.
        options: how to iterate (:class:`ScalingOptions`).
        source_dual, target_dual: optional warm-start duals ``(B, n)``, ``(B, m)``.
    """
    epsilon, max_iter, tol = options.epsilon, options.max_iter, options.tol
    overrelaxation = options.overrelaxation
    cadence = CheckCadence(options.check_every, cost.device, tol)
    anneal_stages, newton_steps = options.anneal_stages, options.newton_steps
    relaxation = options.relaxation
    rho_a, rho_b = relaxation
    mask = marginals.pair_mask
    a, b = marginals.source_mass, marginals.target_mass
    source_mask, target_mask = marginals.source_mask, marginals.target_mask
    batch = a.size(0)
    item_iters = torch.zeros(batch, dtype=torch.long, device=a.device)
    steps = 0
    warm = source_dual is not None or target_dual is not None
    if source_dual is None:
        source_dual = torch.zeros_like(a)
    if target_dual is None:
        target_dual = torch.zeros_like(b)

    if anneal_stages > 0 and not warm:
        source_dual, target_dual, used = _anneal(
            cost, marginals, mask, source_dual, target_dual, epsilon, anneal_stages,
            relaxation,
        )
        item_iters += used
        steps += anneal_stages

    def rebuild(f, g, active):
        # Frozen items keep their duals: the kernel then represents their plan
        # exactly and the scalings restart at one, so they stay where they were.
        f_next, g_next = _log_domain_update(cost, marginals, mask, f, g, epsilon, relaxation)
        f = torch.where(active[:, None], f_next, f)
        g = torch.where(active[:, None], g_next, g)
        exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
        # Mask *inside* the exp: a padded cell of a valid row has exponent
        # f_i / eps, which overflows for small eps; exp(inf) masked afterwards is
        # still inf * 0 = nan in the backward pass of unrolled mode.
        kernel = torch.exp(torch.where(mask, exponent, float("-inf")))
        return f, g, kernel

    ones_u, ones_v = source_mask.to(cost.dtype), target_mask.to(cost.dtype)
    active = torch.ones(batch, dtype=torch.bool, device=a.device)
    # After a rebuild the kernel itself is the plan: both scalings are one.
    source_dual, target_dual, kernel = rebuild(source_dual, target_dual, active)
    u, v = ones_u, ones_v
    item_iters += 1
    steps += 1
    needs_rebuild = torch.zeros_like(active)
    since_check = since_translate = 0
    high = math.exp(_LOG_SCALING_BOUND)
    low = 1.0 / high
    # a relaxed side with a finite positive weight: its total mass converges at
    # the slow rate phi; the translation of every check point removes that mode
    translate = relaxation != HARD and 0.0 not in relaxation
    while steps < max_iter:
        kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
        u_raw = _relax(
            u, _scaling_update(a, kv, source_mask, source_dual, epsilon, rho_a), overrelaxation
        )
        u_next = u_raw.clamp(low, high)
        ktu = torch.bmm(kernel.transpose(1, 2), u_next[:, :, None]).squeeze(2)
        if rho_b == math.inf:
            error = torch.linalg.vector_norm(v * ktu - b, dim=1)
            v_update = _bounded_ratio(b, ktu, target_mask)
        else:
            # the change of the column sums that this column update makes
            v_update = _scaling_update(b, ktu, target_mask, target_dual, epsilon, rho_b)
            error = torch.linalg.vector_norm((v - v_update) * ktu, dim=1)
        v_raw = _relax(v, v_update, overrelaxation)
        v_next = v_raw.clamp(low, high)
        was_active = active
        # Converged items are frozen, so an item's result does not depend on the
        # other items of its batch. (nan error: not converged.)
        active = active & ~(error.detach() < tol)
        item_iters += was_active
        steps += 1
        since_check += 1
        since_translate += 1
        u = torch.where(was_active[:, None], u_next, u)
        v = torch.where(active[:, None], v_next, v)
        # Scalings are clamped to [1/bound, bound] (a shorter step in the duals,
        # the same fixed point) and the items that hit the bound are folded into
        # their duals at the next check point. Beyond the bound, kernel-vector
        # products turn subnormal in float32: correct, but up to 50x slower on CPU.
        spread = torch.maximum(_log_spread(u_raw, source_mask), _log_spread(v_raw, target_mask))
        needs_rebuild = needs_rebuild | (was_active & ~(spread < _LOG_SCALING_BOUND))
        if since_check >= cadence.interval and steps < max_iter:
            since_check = 0
            any_active, any_rebuild, worst_error = to_host(torch.stack((
                active.any().to(error.dtype), needs_rebuild.any().to(error.dtype),
                torch.where(active, error.detach(), 0.0).amax(),
            )))
            cadence.next_interval(worst_error)
            if not any_active:
                break
            translate_now = translate and since_translate >= TRANSLATE_EVERY
            if any_rebuild or translate_now:
                source_dual, target_dual = _absorb(
                    source_dual, target_dual, u, v, marginals, epsilon
                )
                if translate_now:
                    since_translate = 0
                    source_dual, target_dual = _translate(
                        source_dual, target_dual, marginals, relaxation, active
                    )
                source_dual, target_dual, kernel = rebuild(source_dual, target_dual, active)
                u, v = ones_u, ones_v
                needs_rebuild = torch.zeros_like(active)
                item_iters += active
                steps += 1
    if relaxation != HARD:
        # End on an exact log-domain row update (rows at their fixed point).
        source_dual, target_dual = _absorb(source_dual, target_dual, u, v, marginals, epsilon)
        source_dual = _log_domain_source_update(
            cost, marginals, mask, target_dual, epsilon, rho_a
        )
        exponent = (source_dual[:, :, None] + target_dual[:, None, :] - cost) / epsilon
        plan = torch.exp(torch.where(mask, exponent, float("-inf")))
        column_target = None
        if rho_b != math.inf:
            with torch.no_grad():
                column_target = _relaxed_column_target(
                    cost, marginals, mask, source_dual, epsilon, rho_b
                )
        return ScalingSolve(
            plan, source_dual, target_dual, item_iters, steps,
            torch.zeros_like(item_iters), column_target,
        )
    # End on a row update, so that rows are exact whichever way the loop stopped.
    kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
    u = a / torch.where(source_mask, kv, 1.0)
    plan = u[:, :, None] * kernel * v[:, None, :]
    source_dual, target_dual = _absorb(source_dual, target_dual, u, v, marginals, epsilon)
    newton = torch.zeros_like(item_iters)
    # tol = 0 asks for exactly max_iter iterations: nothing to polish towards
    if newton_steps > 0 and tol > 0 and steps >= max_iter:
        source_dual, target_dual, taken = _newton_polish(
            cost, marginals, mask, source_dual, target_dual, active, epsilon,
            newton_steps, tol,
        )
        newton = taken
        exponent = (source_dual[:, :, None] + target_dual[:, None, :] - cost) / epsilon
        plan = torch.exp(torch.where(mask, exponent, float("-inf")))
        if anneal_stages > 0 and not warm:
            error = marginals.column_error(plan)
            still = active & ~(error < tol) & torch.isfinite(error)
            if to_host(still.any()):
                source_dual, target_dual, plan, taken = _newton_continuation(
                    cost, marginals, mask, source_dual, target_dual, plan, error, still,
                    epsilon, anneal_stages, newton_steps, tol,
                )
                newton = newton + taken
    return ScalingSolve(plan, source_dual, target_dual, item_iters, steps, newton)


# Newton steps at each epsilon of the continuation path (_newton_continuation).
_CONTINUATION_STEPS = 5


def _newton_continuation(
    cost, marginals, mask, source_dual, target_dual, plan, error, still, epsilon, stages,
    newton_steps, tol,
):
    """A second solve for the items that Sinkhorn and the Newton polish left
    unconverged: Newton steps along the epsilon-scaling path.

    At epsilon far below the prior's cost of shifting one token (0.01 against
    ``0.5 d^2``), rows are nearly one-hot and Newton started from Sinkhorn's
    iterate makes no progress: the semi-dual is nearly piecewise linear there.
    Following the path ``epsilon * 2^k`` with a few Newton steps per stage keeps
    every start inside the quadratic region of the next, smaller, epsilon
    (path following, as interior-point methods do). It runs in float64: in
    float32 ``(f + g - C) / eps`` loses the digits that Newton needs at this
    epsilon. An item keeps the better of its two results.
    """
    out_dtype = cost.dtype
    cost = cost.double()
    marginals = Marginals(
        source_mask=marginals.source_mask,
        target_mask=marginals.target_mask,
        source_mass=marginals.source_mass.double(),
        target_mass=marginals.target_mass.double(),
    )
    cost_range = item_cost_range(cost, mask)
    wanted = torch.ceil(torch.log2(cost_range.clamp_min(epsilon) / epsilon))
    item_stages = torch.nan_to_num(wanted, nan=0.0).clamp(0, stages).long()
    f = torch.zeros_like(source_dual)
    g = torch.zeros_like(target_dual)
    taken = torch.zeros(f.size(0), dtype=torch.long, device=f.device)
    for k in range(stages):
        stage_epsilon = epsilon * 2.0 ** (stages - k)
        taking_part = still & (stages - k <= item_stages)
        f_next, g_next = _log_domain_update(cost, marginals, mask, f, g, stage_epsilon)
        f = torch.where(taking_part[:, None], f_next, f)
        g = torch.where(taking_part[:, None], g_next, g)
        f, g, stage_taken = _newton_polish(
            cost, marginals, mask, f, g, taking_part, stage_epsilon, _CONTINUATION_STEPS, tol
        )
        taken = taken + stage_taken
    f, g, final_taken = _newton_polish(
        cost, marginals, mask, f, g, still, epsilon, newton_steps, tol
    )
    taken = taken + final_taken
    exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
    rescued = torch.exp(torch.where(mask, exponent, float("-inf"))).to(out_dtype)
    better = still & (marginals.column_error(rescued.double()) < error.double())
    source_dual = torch.where(better[:, None], f.to(out_dtype), source_dual)
    target_dual = torch.where(better[:, None], g.to(out_dtype), target_dual)
    plan = torch.where(better[:, None, None], rescued, plan)
    return source_dual, target_dual, plan, torch.where(still, taken, 0)


def _translate(f, g, marginals: Marginals, relaxation, active):
    """The best shift ``(f + lam, g - lam)`` of the duals (Sejourne et al., 2022,
    translation-invariant Sinkhorn): the plan stays, the dual objective
    ``-rho_a <a, exp(-f / rho_a)> - rho_b <b, exp(-g / rho_b)>`` (``<b, g>`` for a
    hard side) is maximised over ``lam`` in closed form. Unbalanced Sinkhorn
    converges slowly along exactly this direction (the total mass) when
    ``rho >> eps``."""
    rho_a, rho_b = relaxation
    a, b = marginals.source_mass, marginals.target_mass

    def log_mass(mass, dual, valid, rho):
        # log <mass, exp(-dual / rho)>
        return _masked_logsumexp(torch.log(torch.where(valid, mass, 1.0)) - dual / rho, valid, 1)

    if rho_b == math.inf:
        lam = rho_a * (log_mass(a, f, marginals.source_mask, rho_a) - torch.log(b.sum(1)))
    elif rho_a == math.inf:
        lam = rho_b * (torch.log(a.sum(1)) - log_mass(b, g, marginals.target_mask, rho_b))
    else:
        lam = (
            log_mass(a, f, marginals.source_mask, rho_a)
            - log_mass(b, g, marginals.target_mask, rho_b)
        ) / (1.0 / rho_a + 1.0 / rho_b)
    lam = torch.where(active, lam, 0.0)[:, None]
    f = torch.where(marginals.source_mask, f + lam, 0.0)
    g = torch.where(marginals.target_mask, g - lam, 0.0)
    return f, g


def _anneal(cost, marginals, mask, source_dual, target_dual, epsilon, stages,
            relaxation=HARD):
    """Exact log-domain iterations at ``epsilon * 2^k``, ``k = stages .. 1``.

    Item ``b`` takes part in the last ``K_b = ceil(log2(range_b / epsilon))`` of
    them (clamped to ``[0, stages]``): it starts where its kernel is smooth,
    whatever the other items' ranges. Returns the duals and ``K_b``.
    """
    cost_range = item_cost_range(cost, mask)
    wanted = torch.ceil(torch.log2(cost_range.clamp_min(epsilon) / epsilon))
    item_stages = torch.nan_to_num(wanted, nan=0.0).clamp(0, stages).long()
    for k in range(stages):
        taking_part = (stages - k <= item_stages)[:, None]
        f_next, g_next = _log_domain_update(
            cost, marginals, mask, source_dual, target_dual, epsilon * 2.0 ** (stages - k),
            relaxation,
        )
        source_dual = torch.where(taking_part, f_next, source_dual)
        target_dual = torch.where(taking_part, g_next, target_dual)
    return source_dual, target_dual, item_stages


def _newton_polish(cost, marginals, mask, source_dual, target_dual, active, epsilon, steps, tol):
    """Newton's method on the semi-dual (Brauer et al., 2017) for the items that
    Sinkhorn left unconverged; the same optimum, reached in a few steps.

    With rows solved exactly, ``f(g)_i = eps (log a_i - LSE_j((g_j - C_ij) / eps))``,
    the concave semi-dual ``D(g) = <a, f(g)> + <b, g>`` has gradient ``b - P^T 1``
    and negative Hessian ``H = (diag(P^T 1) - P^T diag(1/a) P) / eps`` (``m x m``).
    Sinkhorn converges slowly exactly where ``H`` is ill-conditioned: the temporal
    prior makes the plan a thin band whose column duals are coupled only through
    neighbouring tokens, and Sinkhorn moves information one token per iteration;
    Newton solves that chain in one linear solve per step. The step is clipped to
    ``_NEWTON_TRUST * epsilon`` per dual, then the longest of a few fractions of
    it that does not lower ``D`` (beyond rounding) is taken. At epsilon well below
    the prior's cost of one token's shift (0.01 with temporal_weight 0.5) rows
    become one-hot, D is nearly piecewise linear and this stalls when started
    from Sinkhorn's iterate: :func:`_newton_continuation` then starts it again
    along the epsilon path.

    Returns the duals (rows exact) and the steps taken by each item.
    """
    a, b = marginals.source_mass, marginals.target_mass
    source_mask, target_mask = marginals.source_mask, marginals.target_mask
    log_a = torch.log(torch.where(source_mask, a, 1.0))
    columns = target_mask.sum(1).clamp_min(1).to(cost.dtype)
    pairs = target_mask[:, :, None] & target_mask[:, None, :]
    # H 1 = 0 (adding a constant to g changes nothing); a multiple of 1 1^T on the
    # valid block and 1 on padded diagonal entries make the system regular
    # without changing the step, which is orthogonal to 1.
    regular = torch.where(pairs, 1.0 / (epsilon * columns**2)[:, None, None], 0.0)
    regular = regular + torch.diag_embed((~target_mask).to(cost.dtype))
    slack = 16 * torch.finfo(cost.dtype).eps

    def solve_rows(g):
        lse = _masked_logsumexp((g[:, None, :] - cost) / epsilon, mask, dim=2)
        return torch.where(source_mask, epsilon * (log_a - lse), 0.0)

    def semi_dual(f, g):
        return (a * f).sum(1) + (b * g).sum(1)

    taken = torch.zeros_like(active, dtype=torch.long)
    f = solve_rows(target_dual)
    g = target_dual
    for _ in range(steps):
        exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
        plan = torch.exp(torch.where(mask, exponent, float("-inf")))
        column_sums = plan.sum(1)
        error = torch.linalg.vector_norm(column_sums - b, dim=1)
        active = active & ~(error.detach() < tol)
        if not to_host(active.any()):
            break
        scaled = plan / torch.where(source_mask, a, 1.0)[:, :, None]
        # H is the Laplacian of the token graph weighted by W = P^T diag(1/a) P:
        # built from W's off-diagonal part only, it is positive semi-definite in
        # floating point too (diag(P^T 1) - W cancels catastrophically once rows
        # are nearly one-hot, which is the regime where Newton is needed).
        weights = torch.bmm(plan.transpose(1, 2), scaled)
        weights = weights * (1.0 - torch.eye(weights.size(1), dtype=weights.dtype, device=weights.device))
        hessian = (torch.diag_embed(weights.sum(2)) - weights) / epsilon
        # float64 for the m x m solve: H's small eigenvalues are what matter.
        system = (hessian + regular).double()
        gradient = torch.where(target_mask, b - column_sums, 0.0).double()
        step, _ = torch.linalg.solve_ex(system, gradient)
        step = torch.where(target_mask, step.to(cost.dtype), 0.0)
        # Where the band has no split frame, tokens are coupled by weights ~1e-20
        # and the Newton step is ~1e20 long: no dual moves by more than a few
        # epsilon per step (a trust region), then the longest step of a few that
        # does not lower D (beyond rounding) is taken.
        size = step.abs().amax(1, keepdim=True)
        step = step * torch.clamp(_NEWTON_TRUST * epsilon / size.clamp_min(1e-30), max=1.0)
        base = semi_dual(f, g)
        tolerance = slack * (base.detach().abs() + 1.0)
        best_g, best_f = g, f
        for length in _NEWTON_STEP_LENGTHS:  # increasing: the longest acceptable wins
            candidate = g + length * step
            candidate_f = solve_rows(candidate)
            acceptable = (semi_dual(candidate_f, candidate) >= base - tolerance)[:, None]
            best_g = torch.where(acceptable, candidate, best_g)
            best_f = torch.where(acceptable, candidate_f, best_f)
        g = torch.where(active[:, None], best_g, g)
        f = torch.where(active[:, None], best_f, f)
        taken = taken + active
    return f, g, taken


def _bounded_ratio(mass: torch.Tensor, product: torch.Tensor, valid: torch.Tensor):
    """``mass / product``, a scaling update, zero on padding.

    Without autograd a ratio past the scaling bound (inf included) is simply
    clamped by the caller. Under autograd (unrolled mode) such entries become a
    constant past the bound instead, clamped all the same: a division by an
    underflowed product would put ``1 / 0^2 = inf`` into the backward pass,
    where the clamp's zero gradient turns it into nan. (Two ops per iteration
    instead of eight without autograd.)
    """
    if not product.requires_grad:
        return mass / torch.where(valid, product, 1.0)
    bound = math.exp(_LOG_SCALING_BOUND)
    too_small = valid & (product.detach() * bound < mass)
    ratio = mass / torch.where(valid & ~too_small, product, 1.0)
    return torch.where(too_small, 2.0 * bound, ratio)


def _scaling_update(
    mass: torch.Tensor,
    product: torch.Tensor,
    valid: torch.Tensor,
    dual: torch.Tensor,
    epsilon: float,
    rho: float,
) -> torch.Tensor:
    """A side's scaling update, zero on padding: ``mass / product`` for a hard
    side, ``(mass / product)^phi exp(-dual / (eps + rho))`` for a relaxed one
    (Chizat et al., 2018; POT's ``sinkhorn_stabilized_unbalanced``), ``dual``
    being the side's dual already folded into the kernel."""
    ratio = _bounded_ratio(mass, product, valid)
    if rho == math.inf:
        return ratio
    # (an underflowed product gives log_ratio = inf: bounded, so 0 * it is 0)
    log_ratio = torch.log(torch.where(valid, ratio, 1.0)).clamp(max=4 * _LOG_SCALING_BOUND)
    log_update = damping(rho, epsilon) * log_ratio - dual / (epsilon + rho)
    # Past twice the scaling bound the caller clamps anyway; clamping the
    # exponent first keeps exp finite (no inf * 0 in the backward pass).
    log_update = log_update.clamp(-2 * _LOG_SCALING_BOUND, 2 * _LOG_SCALING_BOUND)
    return torch.where(valid, torch.exp(log_update), 0.0)


def _relax(previous: torch.Tensor, update: torch.Tensor, omega: float) -> torch.Tensor:
    """``previous^(1 - omega) * update^omega``; the same fixed point, fewer steps on
    stiff problems such as the temporal prior's."""
    if omega == 1.0:
        return update
    # Padded entries are 0 in both: keep them 0 without a pow of 0 (its gradient
    # 0^(negative) is inf, and inf * 0 a nan gradient in unrolled mode).
    valid = previous > 0
    safe_previous = torch.where(valid, previous, 1.0)
    return torch.where(valid, safe_previous ** (1.0 - omega) * update**omega, update)


def _log_spread(scaling: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``max |log scaling|`` over each item's valid entries (``inf``/nan if one is
    zero, infinite or nan), on the device."""
    scaling = torch.where(valid, scaling.detach(), 1.0)
    return torch.log(scaling).abs().amax(1)


def _absorb(f, g, u, v, marginals: Marginals, epsilon: float):
    """Fold the scalings into the duals: ``f += eps log u``, ``g += eps log v``."""
    log_u = torch.log(torch.where(marginals.source_mask, u, torch.ones_like(u)))
    log_v = torch.log(torch.where(marginals.target_mask, v, torch.ones_like(v)))
    return f + epsilon * log_u, g + epsilon * log_v


def sinkhorn(
    cost: torch.Tensor,
    source_lengths: Optional[Lengths] = None,
    target_lengths: Optional[Lengths] = None,
    *,
    epsilon: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-9,
    gradient: str = "envelope",
    overrelaxation: float = 1.0,
    check_every: Optional[int] = None,
    epsilon_scaling: bool = True,
    newton_steps: int = DEFAULT_NEWTON_STEPS,
    marginal_relaxation: Relaxation = math.inf,
    check_finite: bool = True,
    setting: Optional[Dict[str, object]] = None,
) -> TransportResult:
    """Entropic OT with uniform masses over a batch of padded cost matrices.

    Solves, per item ``b``, ``min_{P in Pi(a_b, b_b)} <C_b, P> - epsilon H(P)``
    (POT's ``ot.sinkhorn(a, b, C, epsilon, method="sinkhorn_log")``), with
    ``a_b``, ``b_b`` uniform over the first ``source_lengths[b]`` rows and
    ``target_lengths[b]`` columns. Padded cells may hold anything, ``nan`` and
    ``inf`` included: they are never read.

    With ``marginal_relaxation`` finite on a side, that side's constraint
    becomes the penalty ``rho KL(marginal | uniform mass)`` (unbalanced OT,
    POT's ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, epsilon, reg_m,
    reg_type="entropy")``); ``(rho, inf)`` is the semi-relaxed problem with
    hard token (column) masses, ``(0, inf)`` leaves the frames free.

    Args:
        cost: ``(B, n, m)`` costs; any floating dtype (solved in float32, or in
            float64 for float64 input, with autocast disabled).
        source_lengths, target_lengths: ``(B,)`` valid sizes (integer tensors or
            sequences of ints) in ``[1, n]`` and ``[1, m]``; ``None`` = unpadded.
        epsilon: entropic regularisation (TOT's alpha~), finite and > 0.
        max_iter: maximum Sinkhorn iterations.
        tol: tolerance on the L2 norm of the column-marginal violation.
        gradient: ``"envelope"`` (default): the plan is a constant in the
            backward pass, so ``d value / d cost = plan`` (the envelope theorem);
            ``"unrolled"``: autodiff through the iterations.
        overrelaxation: ``omega`` in ``[1, 2)`` of over-relaxed Sinkhorn; 1 (the
            default) is POT's iteration. The solution does not change.
        check_every: iterations between the host reads that stop the loop (the
            only synchronisations of the loop); the result does not depend on it.
            ``None`` (the default): adaptive on the CPU, where a read costs no
            synchronisation, every ``DEVICE_CHECK_EVERY`` (10) on a GPU.
        epsilon_scaling: anneal epsilon on a cold start (see the module
            docstring); the solution does not change, only the iterations needed.
        newton_steps: at most this many Newton steps on the semi-dual for the
            items Sinkhorn leaves unconverged after ``max_iter`` iterations (0:
            none); same solution, see ``_newton_polish``. Not used with
            ``tol=0`` (a fixed iteration count) nor with ``gradient="unrolled"``,
            which differentiates the Sinkhorn iterations only.
        marginal_relaxation: KL weight ``rho`` of the marginal constraints
            (POT's ``reg_m``): one number for both sides or a ``(source,
            target)`` pair, each in ``[0, inf]``; ``inf`` (the default) is the
            hard constraint and runs the balanced solver unchanged.
        check_finite: refuse nan/inf in valid cells with a ``ValueError`` naming
            the item. ``False`` lets them through to a nan result (what an AMP
            grad scaler needs to skip a step).
        setting: extra entries named in the non-convergence warning.

    Returns:
        :class:`TransportResult` with ``value = <C, P>`` (the marginal
        penalties are not included). Warns
        (:class:`ConvergenceWarning`, once per setting) when an item ends far
        from its marginals.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (batch, n, m), got shape {tuple(cost.shape)}")
    relaxation = check_solver_options(
        epsilon, max_iter, tol, gradient, overrelaxation, check_every, newton_steps,
        marginal_relaxation,
    )
    with torch.autocast(device_type=cost.device.type, enabled=False):
        problem = prepare_problem(cost, source_lengths, target_lengths, check_finite)
        work_cost = problem.cost
        stages = annealing_stages(problem.cost_range, epsilon, max_iter) if epsilon_scaling else 0
        with torch.set_grad_enabled(gradient == "unrolled" and torch.is_grad_enabled()):
            solved = solve_scaling(
                work_cost if gradient == "unrolled" else work_cost.detach(),
                problem.marginals,
                ScalingOptions(
                    epsilon, max_iter, tol, overrelaxation, check_every, stages,
                    newton_steps if gradient == "envelope" else 0, relaxation,
                ),
            )
        value = (work_cost * solved.plan).sum((1, 2))
        described = dict(epsilon=epsilon, gw_weight=0.0, **(setting or {}))
        described.update(max_iter=max_iter, tol=tol, overrelaxation=overrelaxation)
        if relaxation != HARD:
            described.update(marginal_relaxation=relaxation)
        return finish_result(
            problem, solved.plan, value, solved.item_iters, cost.dtype, tol, described,
            item_newton=solved.item_newton, column_target=solved.column_target,
        )
