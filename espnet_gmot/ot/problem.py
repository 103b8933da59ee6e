"""Problem set-up, input checks and results, shared by both OT solvers.

:func:`prepare_problem` checks a padded batch (one host read) and casts it to the
working dtype with its padding zeroed; :class:`Marginals` holds the uniform
masses and their masks; :func:`check_problem_options` checks the problem's options
(``epsilon``, ``marginal_relaxation``) that
:func:`~espnet_gmot.ot.sinkhorn.sinkhorn` and
:func:`~espnet_gmot.ot.gromov.fused_gromov_wasserstein` share (their solver
settings are checked by :class:`~espnet_gmot.ot.scaling.SinkhornSettings`);
:func:`finish_result` builds the :class:`TransportResult` with the one host read
at a solve's end and warns (:class:`ConvergenceWarning`, once per setting) when
an item misses its marginals. Kept apart from the iterations, so that both
solvers set up, check and report a problem the same way.

Relaxed marginals (unbalanced and semi-relaxed OT). With a KL weight ``rho``
per side (``marginal_relaxation``, POT's ``reg_m``; :func:`relaxation_pair`)
the solvers minimise

    <C, P> + eps KL(P | 1 1^T) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)

(POT's ``ot.unbalanced.sinkhorn_unbalanced(..., reg_type="entropy")``), where
``rho = inf`` is the hard constraint (the balanced problem, solved by the
balanced code unchanged) and ``rho = 0`` leaves that side free. The updates are
damped by ``phi = rho / (rho + eps)`` (:func:`damping`), see
:mod:`espnet_gmot.ot.log_domain` and :mod:`espnet_gmot.ot.scaling`.
"""

import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

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

# A solve counts as unconverged when an item's column-marginal error exceeds
# both ``tol`` and this share of the marginal's own L2 norm, ``||b|| = 1/sqrt(m)``.
UNCONVERGED_RELATIVE_ERROR = 1e-3

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
    _pair_mask: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)

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
        """``(B, n, m)`` valid cells, built once (every inner solve asks for it)."""
        if self._pair_mask is None:
            self._pair_mask = self.source_mask[:, :, None] & self.target_mask[:, None, :]
        return self._pair_mask

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
    # FGW only: the lengths as host lists, for its length classes
    # (:mod:`espnet_gmot.ot.length_classes`), read with the input checks.
    host_lengths: Optional[Tuple[List[int], List[int]]] = None


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
    # Each tensor's per-item extremes give its range (or bound) and its finiteness.
    if batch:
        low, high = item_cost_extremes(work_cost, mask)
        if check_finite:
            check.add_finite("cost", work_cost, low, high)
        check.add_value("cost_range", (high - low).max())
    else:
        check.add_value("cost_range", zero)
    for i, ((name, _), work) in enumerate(zip(structures, work_structures)):
        if work.numel():
            # (zero padding inside: it does not raise a bound on |entry|)
            low, high = _item_extremes(work.detach())
            if check_finite:
                check.add_finite(name, work, low, high)
            check.add_value(f"structure_max{i}", torch.maximum(high, -low).max())
        else:
            check.add_value(f"structure_max{i}", zero)
    if structures:
        check.add_integers("source_lengths", source_lengths)
        check.add_integers("target_lengths", target_lengths)
    extra = check.read()
    return PaddedProblem(
        marginals=marginals,
        cost=work_cost,
        structures=work_structures,
        source_lengths=source_lengths,
        target_lengths=target_lengths,
        cost_range=extra["cost_range"],
        structure_max=tuple(extra[f"structure_max{i}"] for i in range(len(structures))),
        host_lengths=(
            (extra.get("source_lengths", []), extra.get("target_lengths", []))
            if structures else None
        ),
    )


def item_cost_extremes(
    cost: torch.Tensor, mask: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The smallest and largest of each item's valid costs, ``(B,)`` each, on
    the device (nan where a valid cost is nan)."""
    detached = cost.detach()
    if detached.numel() == 0:
        empty = detached.new_zeros(detached.size(0))
        return empty, empty
    # Padding takes the value of the item's first cell, which is always valid
    # (lengths >= 1), so one min-max pass over the whole item sees only valid values.
    filled = torch.where(mask, detached, detached[:, :1, :1])
    return _item_extremes(filled)


def _item_extremes(values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each item's smallest and largest entry, ``(B,)`` each (nan propagates).
    Two reductions: ``torch.aminmax`` over a dimension runs some 20 times
    slower on the CPU (torch 2.11)."""
    flat = values.flatten(1)
    return flat.amin(1), flat.amax(1)


def item_cost_range(cost: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``max - min`` of each item's valid costs, ``(B,)``, on the device."""
    low, high = item_cost_extremes(cost, mask)
    return high - low


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
    target side, see :mod:`espnet_gmot.ot.scaling`); ``None``: the hard
    marginal ``b``.
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


def check_problem_options(
    epsilon: float, marginal_relaxation: Relaxation = math.inf
) -> Tuple[float, float]:
    """Checks the problem's options that both solvers share (their solver
    settings check themselves, :class:`~espnet_gmot.ot.scaling.SinkhornSettings`);
    returns ``(rho_a, rho_b)``."""
    relaxation = relaxation_pair(marginal_relaxation)
    if not (isinstance(epsilon, (int, float)) and 0 < epsilon < math.inf):
        raise ValueError(f"epsilon must be > 0 and finite, got {epsilon}")
    return relaxation
