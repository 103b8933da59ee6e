"""The stabilised scaling loop, the engine of both OT solvers.

:func:`solve_scaling` works on a batch ``(B, n, m)`` of padded cost matrices
with uniform masses over each item's valid rows and columns. It is Sinkhorn's
algorithm in the *stabilised scaling* form (Schmitzer, 2019): the plan is kept
as ``diag(u) exp((f + g - C) / eps) diag(v)``, where the duals ``f, g`` are
refreshed by an exact log-domain (log-sum-exp) update
(:mod:`espnet_gmot.ot.log_domain`) and the scalings ``u, v`` are updated by two
batched matrix-vector products per iteration. The expensive ``exp`` and
log-sum-exp run only when the scalings drift past a bound (or once per call), so
an iteration costs about as much as POT's exp-domain Sinkhorn while staying as
safe as its log-domain one (no underflow for small ``epsilon``). Duals can be
passed in to warm-start a solve; the fused Gromov-Wasserstein solver uses that
across its outer steps, where the cost changes little from one step to the next.

The iteration loop stays on the device: every per-item decision (freezing a
converged item, refusing a step that would leave the scalings' safe range,
flagging a kernel rebuild) is a masked tensor operation, and the host reads a
value only every ``check_every`` iterations (to stop, or rebuild;
:class:`CheckCadence`) and once at the end, all through
:func:`espnet_gmot.ot.host.to_host`. A balanced solve that hits ``max_iter``
ends with the Newton polish of :mod:`espnet_gmot.ot.polish`.

Relaxed marginals (see :mod:`espnet_gmot.ot.problem` for the objective and
:mod:`espnet_gmot.ot.log_domain` for the damped update): in stabilised form the
update is ``u = (a / K v)^phi_a exp(-f / (eps + rho_a))`` (POT's
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
2022). The Newton polish, which solves the balanced semi-dual, is used only
when both sides are hard.
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from espnet_gmot.ot.host import to_host
from espnet_gmot.ot.log_domain import (
    anneal,
    annealing_stages,
    log_domain_source_update,
    log_domain_target_update,
    log_domain_update,
    masked_logsumexp,
    relaxed_column_target,
)
from espnet_gmot.ot.polish import (
    DEFAULT_NEWTON_STEPS,
    DEVICE_NEWTON_CHECK_EVERY,
    newton_continuation,
    newton_polish,
)
from espnet_gmot.ot.problem import GRADIENT_MODES, HARD, Marginals, damping

# Scalings stay inside [1/bound, bound]: a step is clamped to it, and the item's
# scalings are folded into its duals (kernel rebuilt) at the next check point;
# this keeps kernel-vector products far from over- and underflow.
_LOG_SCALING_BOUND = math.log(1e6)
# A scaling clamped to the bound reads back as the bound up to float rounding.
_AT_SCALING_BOUND = _LOG_SCALING_BOUND * (1.0 - 1e-4)
# A balanced warm start whose cost moved by at most this many epsilons builds
# its kernel from the duals without an exact update: its row and column sums
# are then within exp(this) of the marginals, so the first scalings stay
# inside the bound.
_WARM_KERNEL_CHANGE = _LOG_SCALING_BOUND / 2
# Far below any valid scaling (>= 1/bound), and its power (1 - omega) >= -1 stays
# finite in float32.
_SMALLEST_SCALING = 1e-30

# Host reads (the stop and rebuild decisions) every this many iterations where a
# read drains the device's queue: on a GPU an iteration of the papers' batch is
# a handful of short kernel launches, so reading every iteration would stall the
# device 200 times per solve, while 10 keeps 20 reads per 200 iterations. On the
# CPU a read costs no synchronisation, only its own few small ops, while a fixed
# cadence runs up to k - 1 iterations past convergence: there
# ``check_every=None`` (the default) reads adaptively (:class:`CheckCadence`), at
# most every DEVICE_CHECK_EVERY iterations (bench/bench_ot.py's cadence table
# measures both).
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

    @property
    def newton_every(self) -> int:
        """Newton steps between host reads: every step where reads are free,
        else at most DEVICE_NEWTON_CHECK_EVERY."""
        return 1 if self.adaptive else min(self.fixed, DEVICE_NEWTON_CHECK_EVERY)


@dataclass(frozen=True)
class SinkhornSettings:
    """How a Sinkhorn solve iterates: the solver's settings, apart from the problem.

    The problem is the cost, ``epsilon`` and the marginals with their
    relaxation (see :mod:`espnet_gmot.ot.problem`); everything here only
    changes how the solver gets there (and, for ``max_iter``, ``tol`` and
    ``gradient``, where it stops and what the backward pass sees). The solvers
    build one of these from their keyword arguments and pass it down:
    :func:`~espnet_gmot.ot.sinkhorn.sinkhorn` to its one solve,
    :func:`~espnet_gmot.ot.gromov.fused_gromov_wasserstein` to each of its
    inner solves, :class:`~espnet_gmot.transfer.module.OTKnowledgeTransfer` to
    whichever of them it calls. The defaults here are the solver functions'
    (POT-like: ``numItermax`` 1000, ``stopThr`` 1e-9, plain Sinkhorn); values
    outside a field's range are refused with a ``ValueError`` when the object
    is built.

    Attributes:
        max_iter: maximum iterations of one Sinkhorn solve, >= 1 (epsilon
            annealing stages and kernel rebuilds included; POT's
            ``numItermax``). It is :func:`~espnet_gmot.ot.sinkhorn.sinkhorn`'s
            ``max_iter`` and, for each inner solve,
            :func:`~espnet_gmot.ot.gromov.fused_gromov_wasserstein`'s
            ``inner_iter``: the same budget, named there against the
            ``outer_iter`` mirror-descent steps beside it.
        tol: an item is frozen once the L2 norm of its column-marginal
            violation is below ``tol`` (POT's ``stopThr``; for a relaxed token
            side, of the change one more column update would make, see the
            module docstring); the batch stops at the first check point where
            every item is frozen. Finite and >= 0; 0 runs exactly ``max_iter``
            iterations.
        gradient: one of ``GRADIENT_MODES``: ``"envelope"`` (the plan is a
            constant in the backward pass, ``d value / d cost = plan`` by the
            envelope theorem) or ``"unrolled"`` (autodiff through the
            iterations; no Newton polish, which is not differentiated).
        overrelaxation: ``omega`` in ``[1, 2)`` of over-relaxed Sinkhorn
            (Thibault et al., 2017): ``u <- u^(1 - omega) (a / K v)^omega``; 1
            is plain Sinkhorn (POT's iteration). The fixed point does not change.
        check_every: iterations between host reads (the stop and rebuild
            decisions, the loop's only synchronisations), an integer >= 1; the
            result does not depend on it. ``None``: by device
            (:class:`CheckCadence`: adaptive on the CPU, every
            ``DEVICE_CHECK_EVERY`` elsewhere). The Newton polish reads every
            step with the adaptive cadence, else every
            ``min(check_every, DEVICE_NEWTON_CHECK_EVERY)`` steps.
        epsilon_scaling: anneal epsilon on a cold start (see
            :mod:`espnet_gmot.ot.log_domain`): the solve starts with
            :func:`~espnet_gmot.ot.log_domain.annealing_stages` exact
            log-domain stages at ``epsilon * 2^k`` (from the batch's largest
            cost range, at most a third of ``max_iter``), of which each item
            runs the last ``ceil(log2(its cost range / epsilon))``, so its path
            does not depend on the other items of the batch. Ignored on a warm
            start. The solution does not change, only the iterations needed.
        newton_steps: at most this many Newton steps
            (:func:`~espnet_gmot.ot.polish.newton_polish`), an integer >= 0,
            for the items still unconverged after ``max_iter`` iterations
            (balanced problems, ``gradient="envelope"`` and ``tol > 0`` only);
            on a cold solve with annealing, items still unconverged after them
            are solved again along the epsilon path
            (:func:`~espnet_gmot.ot.polish.newton_continuation`). Same solution.
    """

    max_iter: int = 1000
    tol: float = 1e-9
    gradient: str = "envelope"
    overrelaxation: float = 1.0
    check_every: Optional[int] = None
    epsilon_scaling: bool = True
    newton_steps: int = DEFAULT_NEWTON_STEPS

    def __post_init__(self):
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not 0 <= self.tol < math.inf:
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol}")
        if self.gradient not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {self.gradient!r}")
        if not 1.0 <= self.overrelaxation < 2.0:
            raise ValueError(f"overrelaxation must lie in [1, 2), got {self.overrelaxation}")
        check_every = self.check_every
        if not (check_every is None or (isinstance(check_every, int) and check_every >= 1)):
            raise ValueError(f"check_every must be None or an integer >= 1, got {check_every!r}")
        newton_steps = self.newton_steps
        if not (isinstance(newton_steps, int) and newton_steps >= 0):
            raise ValueError(f"newton_steps must be an integer >= 0, got {newton_steps!r}")


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
    settings: SinkhornSettings,
    *,
    epsilon: float,
    relaxation: Tuple[float, float] = HARD,
    cost_range: float = 0.0,
    source_dual: Optional[torch.Tensor] = None,
    target_dual: Optional[torch.Tensor] = None,
    warm_cost_change: float = math.inf,
) -> ScalingSolve:
    """Stabilised Sinkhorn on a zero-padded cost; the engine of both solvers.

    Args:
        cost: ``(B, n, m)`` finite cost, zero on padded cells, working dtype.
        marginals: masses and masks of the batch.
        settings: how to iterate (:class:`SinkhornSettings`); the caller sets
            the autograd mode its ``gradient`` asks for, the Newton polish runs
            with ``gradient="envelope"`` only.
        epsilon: entropic regularisation.
        relaxation: ``(rho_a, rho_b)`` KL weights of the marginals (``inf``:
            hard); see the module docstring for the update and the error.
        cost_range: a bound on the batch's largest cost range, from which a
            cold solve chooses its annealing stages when
            ``settings.epsilon_scaling`` (:func:`annealing_stages`; 0: none).
        source_dual, target_dual: optional warm-start duals ``(B, n)``, ``(B, m)``.
        warm_cost_change: a bound on ``|cost - C'|`` over the valid cells, ``C'``
            the cost the warm-start duals were solved for (FGW: the previous
            step's); below half the scalings' log bound (in epsilons) a
            balanced warm start builds its kernel from the duals directly.
    """
    max_iter, tol = settings.max_iter, settings.tol
    overrelaxation = settings.overrelaxation
    cadence = CheckCadence(settings.check_every, cost.device, tol)
    anneal_stages = (
        annealing_stages(cost_range, epsilon, max_iter) if settings.epsilon_scaling else 0
    )
    newton_steps = settings.newton_steps if settings.gradient == "envelope" else 0
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
        source_dual, target_dual, used = anneal(
            cost, marginals, mask, source_dual, target_dual, epsilon, anneal_stages,
            relaxation,
        )
        item_iters += used
        steps += anneal_stages

    def rebuild(f, g, active, update="both"):
        # Frozen items keep their duals: the kernel then represents their plan
        # exactly and the scalings restart at one, so they stay where they were.
        if update == "both":
            f_next, g_next = log_domain_update(cost, marginals, mask, f, g, epsilon, relaxation)
            f = torch.where(active[:, None], f_next, f)
        if update == "columns":
            g_next = log_domain_target_update(cost, marginals, mask, f, epsilon, rho_b)
        if update != "none":
            g = torch.where(active[:, None], g_next, g)
        exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
        # Mask *inside* the exp: a padded cell of a valid row has exponent
        # f_i / eps, which overflows for small eps; exp(inf) masked afterwards is
        # still inf * 0 = nan in the backward pass of unrolled mode.
        kernel = torch.exp(torch.where(mask, exponent, float("-inf")))
        return f, g, kernel

    ones_u, ones_v = source_mask.to(cost.dtype), target_mask.to(cost.dtype)
    active = torch.ones(batch, dtype=torch.bool, device=a.device)
    # After a rebuild the kernel itself is the plan: both scalings are one. The
    # first rebuild's exact log-domain updates: both sides on a cold start
    # (its rows can be far off, and a row scaling pinned at the bound costs
    # more than a log-sum-exp) and for relaxed marginals. A balanced warm start
    # (FGW's steps after the first) leaves the rows to the loop, whose first
    # row scaling a / (K v), taken without over-relaxation, is the exact row
    # update, for a matrix-vector product instead of a log-sum-exp; and the
    # columns too when the cost moved so little since the duals were solved
    # (``warm_cost_change``) that the kernel's rows and columns stay within
    # exp(change / eps) of their marginals, inside the scalings' bound.
    first_update = "both"
    if warm and relaxation == HARD:
        first_update = "none" if warm_cost_change <= _WARM_KERNEL_CHANGE * epsilon else "columns"
    source_dual, target_dual, kernel = rebuild(
        source_dual, target_dual, active, first_update
    )
    rows_in_loop = first_update != "both"
    u, v = ones_u, ones_v
    if first_update != "none":  # an exact update counts as an iteration
        item_iters += 1
        steps += 1
    since_check = since_translate = 0
    first_step = steps
    high = math.exp(_LOG_SCALING_BOUND)
    low = 1.0 / high
    # a relaxed side with a finite positive weight: its total mass converges at
    # the slow rate phi; the translation of every check point removes that mode
    translate = relaxation != HARD and 0.0 not in relaxation
    while steps < max_iter:
        kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
        # (that row update is a plain one: over-relaxing it would overshoot)
        row_omega = 1.0 if rows_in_loop and steps == first_step else overrelaxation
        u_raw = _relax(
            u, _scaling_update(a, kv, source_mask, source_dual, epsilon, rho_a), row_omega
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
        if since_check >= cadence.interval and steps < max_iter:
            since_check = 0
            # Scalings are clamped to [1/bound, bound] (a shorter step in the
            # duals, the same fixed point); an item with a scaling at the bound
            # at a check point is folded into its duals. Beyond the bound,
            # kernel-vector products turn subnormal in float32: correct, but
            # far slower on CPU. Looked at here, not per iteration: a clamp
            # that came back inside the bound needs nothing, and an iteration
            # costs a dozen operations less.
            spread = torch.maximum(_log_spread(u, source_mask), _log_spread(v, target_mask))
            at_bound = ~(spread < _AT_SCALING_BOUND)
            # An item frozen with a scaling at the bound has not converged: a
            # scaling pinned by the clamp holds the other side's update at a
            # fixed point, which zeroes the error. It goes on from a rebuild.
            active = active | at_bound
            any_active, any_rebuild, worst_error = to_host(torch.stack((
                active.any().to(error.dtype),
                at_bound.any().to(error.dtype),
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
                item_iters += active
                steps += 1
    if relaxation != HARD:
        # End on an exact log-domain row update (rows at their fixed point).
        source_dual, target_dual = _absorb(source_dual, target_dual, u, v, marginals, epsilon)
        source_dual = log_domain_source_update(
            cost, marginals, mask, target_dual, epsilon, rho_a
        )
        exponent = (source_dual[:, :, None] + target_dual[:, None, :] - cost) / epsilon
        plan = torch.exp(torch.where(mask, exponent, float("-inf")))
        column_target = None
        if rho_b != math.inf:
            with torch.no_grad():
                column_target = relaxed_column_target(
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
        source_dual, target_dual, taken = newton_polish(
            cost, marginals, mask, source_dual, target_dual, active, epsilon,
            newton_steps, tol, cadence.newton_every,
        )
        newton = taken
        exponent = (source_dual[:, :, None] + target_dual[:, None, :] - cost) / epsilon
        plan = torch.exp(torch.where(mask, exponent, float("-inf")))
        if anneal_stages > 0 and not warm:
            error = marginals.column_error(plan)
            still = active & ~(error < tol) & torch.isfinite(error)
            if to_host(still.any()):
                source_dual, target_dual, plan, taken = newton_continuation(
                    cost, marginals, mask, source_dual, target_dual, plan, error, still,
                    epsilon, anneal_stages, newton_steps, tol, cadence.newton_every,
                )
                newton = newton + taken
    return ScalingSolve(plan, source_dual, target_dual, item_iters, steps, newton)


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
        return masked_logsumexp(torch.log(torch.where(valid, mass, 1.0)) - dual / rho, valid, 1)

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
    if not (previous.requires_grad or update.requires_grad):
        # Padded entries are 0 in both; a tiny floor keeps 0^(negative) finite,
        # and a finite number times update^omega = 0 is 0 (three operations a
        # call less than the masked form below, which autograd needs).
        return previous.clamp_min(_SMALLEST_SCALING) ** (1.0 - omega) * update**omega
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
