import math

import numpy as np
import pytest
import torch

from espnet_gmot.ot import (
    cosine_cost,
    length_mask,
    structure_cost,
    temporal_cost,
)
from espnet_gmot.ot.problem import Marginals


def test_length_mask_and_uniform_marginals():
    lengths = torch.tensor([3, 1])
    assert length_mask(lengths, 4).tolist() == [
        [True, True, True, False],
        [True, False, False, False],
    ]
    marginals = Marginals.uniform(lengths, torch.tensor([2, 2]), 4, 2, torch.float64)
    masses = marginals.source_mass
    assert torch.allclose(masses.sum(1), torch.ones(2, dtype=torch.float64))
    assert masses[0, 3] == 0 and masses[1, 1:].abs().sum() == 0
    assert masses[0, :3].tolist() == [1 / 3] * 3


def test_cosine_cost_matches_hand_computation():
    x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    y = torch.tensor([[[0.0, 2.0], [-3.0, 0.0]]], dtype=torch.float64)
    cost = cosine_cost(x, y, torch.tensor([2]), torch.tensor([2]))[0]
    expected = [[1.0, 2.0], [1.0 - 1 / math.sqrt(2), 1.0 + 1 / math.sqrt(2)]]
    assert torch.allclose(cost, torch.tensor(expected, dtype=torch.float64))


def test_temporal_cost_matches_paper_formula():
    n, m = 5, 3
    cost = temporal_cost(torch.tensor([n]), torch.tensor([m]), dtype=torch.float64)[0]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d = abs(i / n - j / m) / math.sqrt(1 / n**2 + 1 / m**2)
            assert cost[i - 1, j - 1].item() == pytest.approx(d**2, abs=1e-12)
    # The diagonal of the grid costs nothing: (n, m) is always on it.
    assert cost[n - 1, m - 1] == 0


def test_temporal_cost_uses_each_items_own_lengths():
    padded = temporal_cost(torch.tensor([5, 2]), torch.tensor([3, 4]), 6, 5)
    alone = temporal_cost(torch.tensor([2]), torch.tensor([4]))
    assert torch.equal(padded[1, :2, :4], alone[0])
    assert padded[1, 2:].abs().sum() == 0 and padded[1, :, 4:].abs().sum() == 0


def test_structure_cost_symmetric_zero_diagonal_and_padding():
    torch.manual_seed(0)
    feats = torch.randn(2, 6, 4)
    lengths = torch.tensor([6, 4])
    cost = structure_cost(feats, lengths)
    assert torch.equal(cost, cost.transpose(1, 2))
    assert torch.allclose(torch.diagonal(cost[0]), torch.zeros(6), atol=1e-6)
    assert cost[1, 4:].abs().sum() == 0 and cost[1, :, 4:].abs().sum() == 0


def test_nan_in_padded_features_never_leaks_into_values_or_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, requires_grad=True)
    y = torch.randn(2, 4, 3)
    x_len, y_len = torch.tensor([5, 3]), torch.tensor([2, 4])
    poisoned_x = x.clone()
    poisoned_x.data[1, 3:] = float("nan")
    poisoned_y = y.clone()
    poisoned_y[0, 2:] = float("inf")
    cost = cosine_cost(poisoned_x, poisoned_y, x_len, y_len)
    assert torch.isfinite(cost).all()
    clean = cosine_cost(x.detach(), y, x_len, y_len)
    assert torch.equal(cost, clean)
    cost.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[1, 3:].abs().sum() == 0


def test_cosine_cost_matches_numpy_reference():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(3, 5))
    ref = 1 - (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        y / np.linalg.norm(y, axis=1, keepdims=True)
    ).T
    got = cosine_cost(
        torch.from_numpy(x)[None], torch.from_numpy(y)[None], torch.tensor([7]), torch.tensor([3])
    )[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)
