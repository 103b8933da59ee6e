"""Batched entropic fused Gromov-Wasserstein (FGW) with the square loss.

Projected mirror descent, the iteration of POT's
``ot.gromov.entropic_fused_gromov_wasserstein(M, C1, C2, p, q,
loss_fun="square_loss", epsilon, alpha, solver="PGD")``:

    g_0 = a b^T
    G_k = (1 - alpha) M + alpha * 2 * (constC - C1 g_k (2 C2)^T)     # FGW gradient
    g_{k+1} = sinkhorn(a, b, G_k, epsilon)

where ``constC[i, k] = sum_i' C1[i, i']^2 a_i' + sum_k' C2[k, k']^2 b_k'`` is the
square-loss decomposition of Peyre et al. (2016, Prop. 1): one step costs
``O(n m (n + m))`` and no ``n x n x m x m`` tensor is ever formed. Unlike POT,
each inner Sinkhorn starts from the previous step's duals (the first one from
epsilon scaling, see :mod:`espnet_gmot.ot.log_domain`); the inner problem has a
unique solution, so this changes the number of iterations, not the result.

Relaxed marginals (``marginal_relaxation``, as in :func:`sinkhorn`): each step's
inner solve becomes the unbalanced scaling algorithm (Chizat et al., 2018), so
the fixed point is a stationary point of

    (1 - alpha) <M, P> + alpha sum L(C1[i,i'], C2[k,k']) P[i,k] P[i',k']
        + eps KL(P | 1 1^T) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b).

``(0, inf)`` is the entropic semi-relaxed FGW of Vincent-Cuaz et al. (2022) with
the token side hard and the frames free (Sejourne et al., 2021, for finite
``rho``). With a marginal that is no longer fixed, ``constC`` is built from the
current plan's marginals (``sum_i' C1[i,i']^2 (P 1)_i'`` and so on), as POT's
semi-relaxed solvers do with ``q = P^T 1``; hard sides keep ``a`` and ``b``.

POT's ``entropic_semirelaxed_fused_gromov_wasserstein`` takes a different
step: mirror descent in the KL geometry, ``P <- diag(p / (K 1)) K`` with
``K = P * exp(-grad / eps)``, where ``eps`` is a step size and the fixed point is
a stationary point of the *unregularised* srFGW. Here ``eps`` is an entropic
regularisation, as in the balanced solver (POT's entropic FGW, ``solver="PGD"``);
the tests check that the plan is the fixed point
``P = diag(p / (exp(-grad(P) / eps) 1)) exp(-grad(P) / eps)`` of POT's own
srFGW gradient, and the unregularised objective against POT's.
"""

import math

from typing import Dict, Optional, Tuple

import torch

from espnet_gmot.ot.costs import Lengths
from espnet_gmot.ot.host import to_host
from espnet_gmot.ot.length_classes import StructureProduct
from espnet_gmot.ot.problem import (
    HARD,
    Marginals,
    Relaxation,
    TransportResult,
    check_problem_options,
    finish_result,
    prepare_problem,
)
from espnet_gmot.ot.scaling import SinkhornSettings, solve_scaling
from espnet_gmot.ot.sinkhorn import solve_sinkhorn

_DEFAULT = SinkhornSettings()


def _square_loss_constant(
    source_structure: torch.Tensor,
    target_structure: torch.Tensor,
    marginals: Marginals,
    plan: Optional[torch.Tensor] = None,
    relaxation=HARD,
) -> torch.Tensor:
    """POT's ``constC`` for the square loss, ``(B, n, m)``; a relaxed side uses
    the marginal of ``plan`` instead of its nominal mass."""
    source_mass, target_mass = marginals.source_mass, marginals.target_mass
    if relaxation[0] != math.inf:
        source_mass = plan.sum(2)
    if relaxation[1] != math.inf:
        target_mass = plan.sum(1)
    source_part = torch.bmm(source_structure.square(), source_mass[:, :, None])
    target_part = torch.bmm(target_structure.square(), target_mass[:, :, None])
    return source_part + target_part.transpose(1, 2)


def _gw_tensor_product(
    constant: torch.Tensor, structure_product: StructureProduct, plan: torch.Tensor
) -> torch.Tensor:
    """``L(C1, C2) (x) plan = constC - C1 plan (2 C2)^T`` for symmetric C1, C2."""
    return structure_product.add_to(constant, plan, -2.0)


def _gradient_base(cost: torch.Tensor, constant: torch.Tensor, gw_weight: float) -> torch.Tensor:
    """The part of FGW's gradient that does not depend on the plan,
    ``(1 - alpha) M + 2 alpha constC``; the step's cost is then
    ``G = base - 4 alpha C1 plan C2`` (``StructureProduct.add_to``)."""
    return (1.0 - gw_weight) * cost + (2.0 * gw_weight) * constant


def fused_gromov_wasserstein(
    cost: torch.Tensor,
    source_structure: torch.Tensor,
    target_structure: torch.Tensor,
    source_lengths: Optional[Lengths] = None,
    target_lengths: Optional[Lengths] = None,
    *,
    epsilon: float = 0.1,
    gw_weight: float = 0.5,
    outer_iter: int = 10,
    inner_iter: int = _DEFAULT.max_iter,
    tol: float = _DEFAULT.tol,
    outer_tol: float = 0.0,
    gradient: str = _DEFAULT.gradient,
    overrelaxation: float = _DEFAULT.overrelaxation,
    check_every: Optional[int] = _DEFAULT.check_every,
    epsilon_scaling: bool = _DEFAULT.epsilon_scaling,
    newton_steps: int = _DEFAULT.newton_steps,
    marginal_relaxation: Relaxation = math.inf,
    check_finite: bool = True,
    setting: Optional[Dict[str, object]] = None,
) -> TransportResult:
    """Entropic FGW between padded batches of graphs.

    Minimises, per item, over couplings ``P`` with uniform marginals,
    ``(1 - gw_weight) <M, P> + gw_weight * sum L(C1[i,i'], C2[k,k']) P[i,k] P[i',k']
    - epsilon H(P)`` with ``L(x, y) = (x - y)^2`` (METHOD.md's ``E(g)``, GM-OT).

    The inner solves' settings (``inner_iter``, ``tol``, ``gradient`` to
    ``newton_steps``) are the fields of
    :class:`~espnet_gmot.ot.scaling.SinkhornSettings`, which holds their
    defaults and their meaning; this function builds one and calls
    :func:`solve_fused_gromov_wasserstein`, which takes such an object directly.
    ``inner_iter`` is its ``max_iter``, the same budget as :func:`sinkhorn`'s
    ``max_iter`` but per inner solve, named here against ``outer_iter``.

    Args:
        cost: ``(B, n, m)`` node cost ``M``.
        source_structure: ``(B, n, n)`` symmetric edge cost ``C1`` (GM-OT ``D_A``).
        target_structure: ``(B, m, m)`` symmetric edge cost ``C2`` (GM-OT ``D_L``).
        source_lengths, target_lengths: ``(B,)`` valid sizes; ``None`` = unpadded.
        epsilon: entropic regularisation, finite and > 0.
        gw_weight: weight ``alpha`` of the Gromov-Wasserstein (edge) term, in
            ``[0, 1]``; 0 reduces exactly to :func:`sinkhorn` on ``cost``.
        outer_iter: number of mirror-descent steps (POT's ``max_iter``).
        inner_iter: maximum Sinkhorn iterations per step (POT's ``numItermax``;
            ``SinkhornSettings.max_iter`` of the inner solves).
        tol: inner tolerance on the column-marginal violation (POT's ``stopThr``).
        outer_tol: an item stops once its plan moves by less than this (Frobenius
            norm) in one step; POT checks the same quantity every 10th step.
            0 runs exactly ``outer_iter`` steps (and reads nothing per step).
        gradient: ``"envelope"`` (plan constant in backward) or ``"unrolled"``.
        overrelaxation: ``omega`` of the inner over-relaxed Sinkhorn (1 = POT's).
        check_every, epsilon_scaling, newton_steps, check_finite, setting: as in
            :func:`sinkhorn` (epsilon scaling applies to the first, cold, inner
            solve; Newton steps to every inner solve that hits ``inner_iter``).
        marginal_relaxation: KL weights ``(rho_a, rho_b)`` of the marginals,
            as in :func:`sinkhorn` (see the module docstring); ``inf``: hard.

    Returns:
        :class:`TransportResult` whose ``value`` is the FGW objective without
        the entropy term (POT's ``log["fgw_dist"]``).
    """
    settings = SinkhornSettings(
        max_iter=inner_iter,
        tol=tol,
        gradient=gradient,
        overrelaxation=overrelaxation,
        check_every=check_every,
        epsilon_scaling=epsilon_scaling,
        newton_steps=newton_steps,
    )
    return solve_fused_gromov_wasserstein(
        cost,
        source_structure,
        target_structure,
        source_lengths,
        target_lengths,
        epsilon=epsilon,
        gw_weight=gw_weight,
        outer_iter=outer_iter,
        outer_tol=outer_tol,
        settings=settings,
        marginal_relaxation=marginal_relaxation,
        check_finite=check_finite,
        setting=setting,
    )


def solve_fused_gromov_wasserstein(
    cost: torch.Tensor,
    source_structure: torch.Tensor,
    target_structure: torch.Tensor,
    source_lengths: Optional[Lengths] = None,
    target_lengths: Optional[Lengths] = None,
    *,
    epsilon: float,
    gw_weight: float,
    outer_iter: int,
    outer_tol: float = 0.0,
    settings: SinkhornSettings = _DEFAULT,
    marginal_relaxation: Relaxation = math.inf,
    check_finite: bool = True,
    setting: Optional[Dict[str, object]] = None,
) -> TransportResult:
    """:func:`fused_gromov_wasserstein` with the settings of its inner Sinkhorn
    solves as one :class:`~espnet_gmot.ot.scaling.SinkhornSettings` (already
    checked when it was built; its ``max_iter`` is the ``inner_iter`` there);
    the other arguments as there."""
    if cost.dim() != 3:
        raise ValueError(f"cost must be (batch, n, m), got shape {tuple(cost.shape)}")
    batch, n, m = cost.shape
    if tuple(source_structure.shape) != (batch, n, n):
        raise ValueError(
            f"source_structure must be {(batch, n, n)} to match cost "
            f"{tuple(cost.shape)}, got {tuple(source_structure.shape)}"
        )
    if tuple(target_structure.shape) != (batch, m, m):
        raise ValueError(
            f"target_structure must be {(batch, m, m)} to match cost "
            f"{tuple(cost.shape)}, got {tuple(target_structure.shape)}"
        )
    if not 0.0 <= gw_weight <= 1.0:
        raise ValueError(f"gw_weight must lie in [0, 1], got {gw_weight}")
    if outer_iter < 1:
        raise ValueError(f"outer_iter must be >= 1, got {outer_iter}")
    relaxation = check_problem_options(epsilon, marginal_relaxation)
    if gw_weight == 0.0:
        return solve_sinkhorn(
            cost,
            source_lengths,
            target_lengths,
            epsilon=epsilon,
            settings=settings,
            marginal_relaxation=relaxation,
            check_finite=check_finite,
            setting=setting,
        )

    with torch.autocast(device_type=cost.device.type, enabled=False):
        problem = prepare_problem(
            cost, source_lengths, target_lengths, check_finite,
            structures=(("source_structure", source_structure),
                        ("target_structure", target_structure)),
        )
        marginals = problem.marginals
        work_source, work_target = problem.structures
        constant = _square_loss_constant(work_source, work_target, marginals)
        # C1 P C2 per length class, cut once for every step of this solve
        structure_product = StructureProduct(work_source, work_target, *problem.host_lengths)
        # A bound on the range of the first step's cost G_0, from which the cold
        # first inner solve chooses its annealing stages: the square-loss term
        # lies in [-2 s1 s2, s1^2 + s2^2] for entries bounded by s1, s2.
        s1, s2 = problem.structure_max
        bound = (1.0 - gw_weight) * problem.cost_range + 2.0 * gw_weight * (s1 + s2) ** 2
        # How far a step's cost moves from the last step's, from which a warm
        # inner solve decides whether its kernel needs an exact update first:
        # |4 alpha C1 (P' - P) C2| <= 4 alpha s1 s2 |P' - P|_1 <= 8 alpha s1 s2
        # for balanced plans (each of mass 1).
        step_change = 8.0 * gw_weight * s1 * s2 if relaxation == HARD else math.inf
        gradient = settings.gradient
        with torch.set_grad_enabled(gradient == "unrolled" and torch.is_grad_enabled()):
            inputs = (problem.cost, work_source, work_target, constant)
            if gradient == "envelope":
                inputs = tuple(t.detach() for t in inputs)
            # (the product's cut structures may carry gradients; in envelope mode
            # the loop runs without autograd, and the value below uses them)
            plan, item_iters, item_newton, n_outer, column_target = _mirror_descent(
                *inputs, structure_product, marginals, gw_weight=gw_weight, outer_iter=outer_iter,
                outer_tol=outer_tol, settings=settings, epsilon=epsilon,
                relaxation=relaxation, cost_range=bound, step_change=step_change,
            )
            if relaxation != HARD:
                constant = _square_loss_constant(
                    work_source, work_target, marginals, plan, relaxation
                )

        gw_term = _gw_tensor_product(constant, structure_product, plan)
        value = (1.0 - gw_weight) * (problem.cost * plan).sum((1, 2)) + gw_weight * (
            gw_term * plan
        ).sum((1, 2))
        described = dict(epsilon=epsilon, gw_weight=gw_weight, **(setting or {}))
        described.update(
            outer_iter=outer_iter, inner_iter=settings.max_iter, tol=settings.tol,
            overrelaxation=settings.overrelaxation,
        )
        if relaxation != HARD:
            described.update(marginal_relaxation=relaxation)
        return finish_result(
            problem, plan, value, item_iters, cost.dtype, settings.tol, described,
            n_outer=n_outer, item_newton=item_newton, column_target=column_target,
        )


def _mirror_descent(
    cost: torch.Tensor,
    source_structure: torch.Tensor,
    target_structure: torch.Tensor,
    constant: torch.Tensor,
    structure_product: StructureProduct,
    marginals: Marginals,
    *,
    gw_weight: float,
    outer_iter: int,
    outer_tol: float,
    settings: SinkhornSettings,
    epsilon: float,
    relaxation: Tuple[float, float],
    cost_range: float,
    step_change: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, Optional[torch.Tensor]]:
    """POT's projected mirror descent: ``g_{k+1} = Sinkhorn(G_k)`` warm-started
    from the previous duals, with the inner solves run as ``settings`` says
    (``cost_range``: a bound on the first, cold, step's cost range, for its
    annealing stages; ``step_change``: on how far a step's cost moves from the
    last step's, for the warm solves after it).

    Returns the plan, each item's total inner iterations and Newton steps
    (device), the number of outer steps run and the last inner solve's column
    target (``None`` for a hard token side)."""
    plan = marginals.source_mass[:, :, None] * marginals.target_mass[:, None, :]
    active = torch.ones(plan.size(0), dtype=torch.bool, device=plan.device)
    item_iters = torch.zeros(plan.size(0), dtype=torch.long, device=plan.device)
    item_newton = torch.zeros_like(item_iters)
    source_dual = target_dual = column_target = None
    n_outer = 0
    # (hard marginals: constC, and so this part, is the same for every step)
    base = _gradient_base(cost, constant, gw_weight) if relaxation == HARD else None
    for _ in range(outer_iter):
        if relaxation != HARD:  # constC follows the plan's free marginals
            constant = _square_loss_constant(
                source_structure, target_structure, marginals, plan, relaxation
            )
            base = _gradient_base(cost, constant, gw_weight)
        gradient = structure_product.add_to(base, plan, -4.0 * gw_weight)
        solved = solve_scaling(
            gradient, marginals, settings, epsilon=epsilon, relaxation=relaxation,
            cost_range=cost_range, source_dual=source_dual, target_dual=target_dual,
            warm_cost_change=step_change,
        )
        source_dual, target_dual = solved.source_dual, solved.target_dual
        if solved.column_target is not None:
            column_target = solved.column_target if column_target is None else torch.where(
                active[:, None], solved.column_target, column_target
            )
        item_iters = item_iters + torch.where(active, solved.item_iters, 0)
        item_newton = item_newton + torch.where(active, solved.item_newton, 0)
        n_outer += 1
        if outer_tol == 0:  # every item runs every step: nothing to compare or freeze
            plan = solved.plan
            continue
        change = torch.linalg.vector_norm(solved.plan.detach() - plan.detach(), dim=(1, 2))
        plan = torch.where(active[:, None, None], solved.plan, plan)
        active = active & ~(change < outer_tol)
        if not to_host(active.any()):
            break
    return plan, item_iters, item_newton, n_outer, column_target
