"""Batched entropic optimal transport for padded cost matrices: :func:`sinkhorn`.

The public entry point. The solver behind it is split by concern, in the
spirit of OTT-JAX's problems and solvers:

* :mod:`espnet_gmot.ot.problem`: input checks, uniform marginals, relaxed
  marginals' weights, the result and the non-convergence warning (shared with
  the FGW solver);
* :mod:`espnet_gmot.ot.scaling`: the solver's settings
  (:class:`~espnet_gmot.ot.scaling.SinkhornSettings`) and the stabilised scaling
  loop (Schmitzer, 2019), device-resident, with relaxed marginals;
* :mod:`espnet_gmot.ot.log_domain`: exact log-domain updates and epsilon
  annealing;
* :mod:`espnet_gmot.ot.polish`: Newton steps on the semi-dual for the items
  Sinkhorn leaves unconverged.

:func:`sinkhorn` gathers its solver settings into one frozen
:class:`~espnet_gmot.ot.scaling.SinkhornSettings` (checked when it is built) and
calls :func:`solve_sinkhorn`, which checks the problem's options, prepares it,
chooses what the backward pass sees, runs the loop and reports.
"""

import math
from typing import Dict, Optional

import torch

from espnet_gmot.ot.costs import Lengths
from espnet_gmot.ot.problem import (
    HARD,
    Relaxation,
    TransportResult,
    check_problem_options,
    finish_result,
    prepare_problem,
)
from espnet_gmot.ot.scaling import SinkhornSettings, solve_scaling

_DEFAULT = SinkhornSettings()


def sinkhorn(
    cost: torch.Tensor,
    source_lengths: Optional[Lengths] = None,
    target_lengths: Optional[Lengths] = None,
    *,
    epsilon: float = 0.1,
    max_iter: int = _DEFAULT.max_iter,
    tol: float = _DEFAULT.tol,
    gradient: str = _DEFAULT.gradient,
    overrelaxation: float = _DEFAULT.overrelaxation,
    check_every: Optional[int] = _DEFAULT.check_every,
    epsilon_scaling: bool = _DEFAULT.epsilon_scaling,
    newton_steps: int = _DEFAULT.newton_steps,
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

    The solver's settings (``max_iter`` to ``newton_steps``) are the fields of
    :class:`~espnet_gmot.ot.scaling.SinkhornSettings`, which holds their
    defaults and their meaning; this function builds one and calls
    :func:`solve_sinkhorn`, which takes such an object directly.

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
        epsilon_scaling: anneal epsilon on a cold start (see
            :mod:`espnet_gmot.ot.log_domain`); the solution does not change,
            only the iterations needed.
        newton_steps: at most this many Newton steps on the semi-dual for the
            items Sinkhorn leaves unconverged after ``max_iter`` iterations (0:
            none); same solution, see :func:`espnet_gmot.ot.polish.newton_polish`.
            Not used with ``tol=0`` (a fixed iteration count) nor with
            ``gradient="unrolled"``, which differentiates the Sinkhorn
            iterations only.
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
    settings = SinkhornSettings(
        max_iter=max_iter,
        tol=tol,
        gradient=gradient,
        overrelaxation=overrelaxation,
        check_every=check_every,
        epsilon_scaling=epsilon_scaling,
        newton_steps=newton_steps,
    )
    return solve_sinkhorn(
        cost,
        source_lengths,
        target_lengths,
        epsilon=epsilon,
        settings=settings,
        marginal_relaxation=marginal_relaxation,
        check_finite=check_finite,
        setting=setting,
    )


def solve_sinkhorn(
    cost: torch.Tensor,
    source_lengths: Optional[Lengths] = None,
    target_lengths: Optional[Lengths] = None,
    *,
    epsilon: float,
    settings: SinkhornSettings = _DEFAULT,
    marginal_relaxation: Relaxation = math.inf,
    check_finite: bool = True,
    setting: Optional[Dict[str, object]] = None,
) -> TransportResult:
    """:func:`sinkhorn` with its solver settings as one
    :class:`~espnet_gmot.ot.scaling.SinkhornSettings` (already checked when it
    was built); the other arguments as there."""
    if cost.dim() != 3:
        raise ValueError(f"cost must be (batch, n, m), got shape {tuple(cost.shape)}")
    relaxation = check_problem_options(epsilon, marginal_relaxation)
    gradient = settings.gradient
    with torch.autocast(device_type=cost.device.type, enabled=False):
        problem = prepare_problem(cost, source_lengths, target_lengths, check_finite)
        work_cost = problem.cost
        with torch.set_grad_enabled(gradient == "unrolled" and torch.is_grad_enabled()):
            solved = solve_scaling(
                work_cost if gradient == "unrolled" else work_cost.detach(),
                problem.marginals,
                settings,
                epsilon=epsilon,
                relaxation=relaxation,
                cost_range=problem.cost_range,
            )
        value = (work_cost * solved.plan).sum((1, 2))
        described = dict(epsilon=epsilon, gw_weight=0.0, **(setting or {}))
        described.update(
            max_iter=settings.max_iter, tol=settings.tol, overrelaxation=settings.overrelaxation
        )
        if relaxation != HARD:
            described.update(marginal_relaxation=relaxation)
        return finish_result(
            problem, solved.plan, value, solved.item_iters, cost.dtype, settings.tol, described,
            item_newton=solved.item_newton, column_target=solved.column_target,
        )
