"""The solvers' settings object: frozen, checked when built, the single source of
the solver functions' defaults, and the same solve whether it is passed whole
or built from keywords."""

import dataclasses
import inspect
import math
import re

import pytest
import torch

from espnet_gmot.ot import (
    GRADIENT_MODES,
    SinkhornSettings,
    fused_gromov_wasserstein,
    sinkhorn,
    solve_fused_gromov_wasserstein,
    solve_sinkhorn,
    structure_cost,
)

# The keyword of each SinkhornSettings field in the solver functions.
SINKHORN_KEYWORDS = {field.name: field.name for field in dataclasses.fields(SinkhornSettings)}
FGW_KEYWORDS = {**SINKHORN_KEYWORDS, "max_iter": "inner_iter"}


def test_settings_are_frozen():
    settings = SinkhornSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.tol = 1e-3
    assert dataclasses.replace(settings, tol=1e-3).tol == 1e-3 and settings.tol == 1e-9
    assert hash(settings) == hash(SinkhornSettings())


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("max_iter", 0, "max_iter must be >= 1, got 0"),
        ("tol", -1e-6, "tol must be a finite number >= 0, got -1e-06"),
        ("tol", math.inf, "tol must be a finite number >= 0, got inf"),
        ("gradient", "implicit", f"gradient must be one of {GRADIENT_MODES}, got 'implicit'"),
        ("overrelaxation", 2.0, "overrelaxation must lie in [1, 2), got 2.0"),
        ("overrelaxation", 0.5, "overrelaxation must lie in [1, 2), got 0.5"),
        ("check_every", 0, "check_every must be None or an integer >= 1, got 0"),
        ("check_every", 2.5, "check_every must be None or an integer >= 1, got 2.5"),
        ("newton_steps", -1, "newton_steps must be an integer >= 0, got -1"),
        ("newton_steps", 1.5, "newton_steps must be an integer >= 0, got 1.5"),
    ],
)
def test_settings_are_checked_when_built_and_by_the_solvers(field, bad, message):
    message = re.escape(message)
    with pytest.raises(ValueError, match=message):
        SinkhornSettings(**{field: bad})
    cost = torch.rand(1, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        sinkhorn(cost, **{SINKHORN_KEYWORDS[field]: bad})
    structure = torch.zeros(1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        fused_gromov_wasserstein(
            cost, structure, structure[:, :3, :3], **{FGW_KEYWORDS[field]: bad}
        )


@pytest.mark.parametrize(
    "function, keywords",
    [(sinkhorn, SINKHORN_KEYWORDS), (fused_gromov_wasserstein, FGW_KEYWORDS)],
)
def test_solver_defaults_are_the_settings_defaults(function, keywords):
    parameters = inspect.signature(function).parameters
    defaults = SinkhornSettings()
    for field, keyword in keywords.items():
        assert parameters[keyword].default == getattr(defaults, field), keyword


def test_keywords_and_settings_object_give_the_same_solve():
    gen = torch.Generator().manual_seed(0)
    cost = torch.rand(2, 7, 5, generator=gen, dtype=torch.float64)
    source = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([7, 4]), torch.tensor([5, 3])
    structures = structure_cost(source, lengths[0]), structure_cost(target, lengths[1])
    options = dict(max_iter=50, tol=1e-7, overrelaxation=1.5, check_every=3, newton_steps=2)
    settings = SinkhornSettings(**options)

    by_keywords = sinkhorn(cost, *lengths, epsilon=0.2, marginal_relaxation=(1.0, math.inf),
                           **options)
    by_settings = solve_sinkhorn(cost, *lengths, epsilon=0.2, settings=settings,
                                 marginal_relaxation=(1.0, math.inf))
    assert torch.equal(by_keywords.plan, by_settings.plan)
    assert by_keywords.n_iter == by_settings.n_iter

    options["inner_iter"] = options.pop("max_iter")
    by_keywords = fused_gromov_wasserstein(cost, *structures, *lengths, epsilon=0.2,
                                           gw_weight=0.3, outer_iter=3, **options)
    by_settings = solve_fused_gromov_wasserstein(cost, *structures, *lengths, epsilon=0.2,
                                                 gw_weight=0.3, outer_iter=3, settings=settings)
    assert torch.equal(by_keywords.plan, by_settings.plan)
    assert (by_keywords.n_iter, by_keywords.n_outer) == (by_settings.n_iter, by_settings.n_outer)
