"""A warm-started scaling solve reaches the cold solve's plan by every start path.

FGW warm-starts each inner solve from the previous step's duals. A balanced
warm start skips exact log-domain updates (see ``solve_scaling``): the rows
always, the columns too when the cost moved by less than
``_WARM_KERNEL_CHANGE`` epsilons. Each path must reach the same fixed point.
"""

import math

import pytest
import torch

from espnet_gmot.ot import scaling
from espnet_gmot.ot.problem import Marginals
from tests.ot.problems import stiff_batch

EPSILON = 0.05


def problem():
    cost, _, _, n_len, m_len = stiff_batch(kind="random")
    marginals = Marginals.uniform(n_len, m_len, cost.size(1), cost.size(2), cost.dtype)
    return torch.where(marginals.pair_mask, cost, 0.0), marginals


@pytest.mark.parametrize("overrelaxation", [1.0, 1.7])
@pytest.mark.parametrize("moved_epsilons", [0.5, 5.0, 40.0])
def test_a_warm_start_reaches_the_cold_plan_of_the_moved_cost(
    moved_epsilons, overrelaxation, monkeypatch
):
    cost, marginals = problem()
    settings = scaling.SinkhornSettings(
        max_iter=20000, tol=1e-11, newton_steps=0, overrelaxation=overrelaxation
    )
    before = scaling.solve_scaling(cost, marginals, settings, epsilon=EPSILON, cost_range=10.0)
    noise = torch.rand(cost.shape, generator=torch.Generator().manual_seed(3), dtype=cost.dtype)
    change = moved_epsilons * EPSILON
    moved = torch.where(marginals.pair_mask, cost + change * (2 * noise - 1), 0.0)
    cold = scaling.solve_scaling(moved, marginals, settings, epsilon=EPSILON, cost_range=10.0)

    exact_updates = []
    for name in ("log_domain_update", "log_domain_target_update"):
        def counted(*args, _update=getattr(scaling, name), _name=name):
            exact_updates.append(_name)
            return _update(*args)
        monkeypatch.setattr(scaling, name, counted)

    for bound in (change, math.inf):  # the kernel from the duals (where allowed); columns first
        exact_updates.clear()
        warm = scaling.solve_scaling(
            moved, marginals, settings, epsilon=EPSILON, source_dual=before.source_dual,
            target_dual=before.target_dual, warm_cost_change=bound,
        )
        assert marginals.column_error(warm.plan).max() < 1e-9
        assert (warm.plan - cold.plan).abs().max() < 1e-10
        first = exact_updates[:1]
        if bound <= scaling._WARM_KERNEL_CHANGE * EPSILON:
            assert first == []  # (no bound rebuild either, at this small a change)
        else:
            assert first == ["log_domain_target_update"]
