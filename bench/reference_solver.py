"""A frozen reference for bench_ot's regression guard: the solver as of 6c18e61.

The balanced, envelope-gradient path of the project's Sinkhorn and FGW solvers
as they stood before the device-resident loop (commit 6c18e61): stabilised
Sinkhorn in the scaling domain with a convergence check after *every*
iteration, rebuilt in the log domain when the scalings drift, warm-started
between FGW's mirror-descent steps, and the padded structure product. Kept here
unchanged, so that ``bench_ot.py --guard`` compares today's solver with a fixed
point on the same machine in the same run (timings kept from another day on
another load would not be comparable). Not part of the package: no checks, no
relaxed marginals, no gradients through the iterations.
"""

import torch

_SCALING_BOUND = 1e6


def _uniform(lengths, size, dtype):
    mask = torch.arange(size)[None, :] < lengths[:, None]
    return mask, mask.to(dtype) / lengths.to(dtype)[:, None]


def _masked_logsumexp(values, mask, dim):
    values = values.masked_fill(~mask, float("-inf"))
    peak = values.amax(dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.exp(values - peak).sum(dim, keepdim=True)
    total = torch.where(mask.any(dim, keepdim=True), total, torch.ones_like(total))
    return (peak + torch.log(total)).squeeze(dim)


def _scaling(cost, masks, masses, epsilon, max_iter, tol, f, g, omega):
    """6c18e61's ``solve_scaling``: ``(plan, f, g, iterations)``."""
    (source_mask, target_mask), (a, b) = masks, masses
    mask = source_mask[:, :, None] & target_mask[:, None, :]
    log_a = torch.log(torch.where(source_mask, a, 1.0))
    log_b = torch.log(torch.where(target_mask, b, 1.0))
    f = torch.zeros_like(a) if f is None else f
    g = torch.zeros_like(b) if g is None else g

    def relax(previous, update):
        return update if omega == 1.0 else previous.clamp_min(1e-38) ** (1 - omega) * update**omega

    def absorb(f, g, u, v):
        f = f + epsilon * torch.log(torch.where(source_mask, u, torch.ones_like(u)))
        return f, g + epsilon * torch.log(torch.where(target_mask, v, torch.ones_like(v)))

    def rebuild(f, g, active):
        g_next = epsilon * (log_b - _masked_logsumexp((f[:, :, None] - cost) / epsilon, mask, 1))
        g_next = torch.where(target_mask, g_next, 0.0)
        f_next = epsilon * (log_a - _masked_logsumexp((g_next[:, None, :] - cost) / epsilon, mask, 2))
        f_next = torch.where(source_mask, f_next, 0.0)
        f = torch.where(active[:, None], f_next, f)
        g = torch.where(active[:, None], g_next, g)
        exponent = (f[:, :, None] + g[:, None, :] - cost) / epsilon
        kernel = torch.where(mask, torch.exp(exponent), torch.zeros_like(exponent))
        return f, g, kernel, target_mask.to(cost.dtype)

    active = torch.ones(a.size(0), dtype=torch.bool)
    f, g, kernel, v = rebuild(f, g, active)
    u = source_mask.to(cost.dtype)
    n_iter = 1
    while n_iter < max_iter:
        kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
        u = relax(u, a / torch.where(source_mask, kv, torch.ones_like(kv)))
        ktu = torch.bmm(kernel.transpose(1, 2), u[:, :, None]).squeeze(2)
        error = torch.linalg.vector_norm(v * ktu - b, dim=1)
        n_iter += 1
        active = error >= tol
        if not bool(active.any()):
            break
        v_next = relax(v, b / torch.where(target_mask, ktu, torch.ones_like(ktu)))
        v = torch.where(active[:, None], v_next, v)
        bounded_u = torch.where(source_mask, u, torch.ones_like(u))
        bounded_v = torch.where(target_mask, v, torch.ones_like(v))
        low, high = 1.0 / _SCALING_BOUND, _SCALING_BOUND
        if not bool((bounded_u.min() > low) & (bounded_u.max() < high)
                    & (bounded_v.min() > low) & (bounded_v.max() < high)):
            if bool(torch.isfinite(u).all() and torch.isfinite(v).all()):
                f, g = absorb(f, g, u, v)
            f, g, kernel, v = rebuild(f, g, active)
            u = source_mask.to(cost.dtype)
            n_iter += 1
    kv = torch.bmm(kernel, v[:, :, None]).squeeze(2)
    u = a / torch.where(source_mask, kv, torch.ones_like(kv))
    f, g = absorb(f, g, u, v)
    return u[:, :, None] * kernel * v[:, None, :], f, g, n_iter


@torch.no_grad()
def reference_sinkhorn(cost, n_len, m_len, *, epsilon, max_iter, tol, overrelaxation=1.0):
    """6c18e61's ``sinkhorn``: plan, value and column error (float32 input)."""
    batch, n, m = cost.shape
    source_mask, a = _uniform(n_len, n, cost.dtype)
    target_mask, b = _uniform(m_len, m, cost.dtype)
    cost = torch.where(source_mask[:, :, None] & target_mask[:, None, :], cost, 0.0)
    plan = _scaling(cost, (source_mask, target_mask), (a, b), epsilon, max_iter, tol,
                    None, None, overrelaxation)[0]
    # the value and the column error, as 6c18e61 returned them
    return plan, (cost * plan).sum((1, 2)), torch.linalg.vector_norm(plan.sum(1) - b, dim=1)


@torch.no_grad()
def reference_fgw(cost, c1, c2, n_len, m_len, *, epsilon, gw_weight, outer_iter, inner_iter,
                  tol, overrelaxation=1.0):
    """6c18e61's ``fused_gromov_wasserstein``: plan, value and column error."""
    batch, n, m = cost.shape
    source_mask, a = _uniform(n_len, n, cost.dtype)
    target_mask, b = _uniform(m_len, m, cost.dtype)
    cost = torch.where(source_mask[:, :, None] & target_mask[:, None, :], cost, 0.0)
    c1 = torch.where(source_mask[:, :, None] & source_mask[:, None, :], c1, 0.0)
    c2 = torch.where(target_mask[:, :, None] & target_mask[:, None, :], c2, 0.0)
    constant = torch.bmm(c1**2, a[:, :, None]) + torch.bmm(c2**2, b[:, :, None]).transpose(1, 2)
    plan = a[:, :, None] * b[:, None, :]
    f = g = None
    for _ in range(outer_iter):
        gw_term = constant - 2.0 * torch.bmm(torch.bmm(c1, plan), c2)
        gradient = (1.0 - gw_weight) * cost + gw_weight * 2.0 * gw_term
        plan, f, g, _ = _scaling(gradient, (source_mask, target_mask), (a, b), epsilon,
                                 inner_iter, tol, f, g, overrelaxation)
    # the objective and the column error, as 6c18e61 returned them
    gw_term = constant - 2.0 * torch.bmm(torch.bmm(c1, plan), c2)
    value = (1.0 - gw_weight) * (cost * plan).sum((1, 2)) + gw_weight * (gw_term * plan).sum((1, 2))
    return plan, value, torch.linalg.vector_norm(plan.sum(1) - b, dim=1)
