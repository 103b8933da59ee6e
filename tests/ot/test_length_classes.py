"""FGW's structure product per length class (espnet_gmot.ot.length_classes)."""

import itertools

import pytest
import torch

from espnet_gmot.ot import fused_gromov_wasserstein
from espnet_gmot.ot.length_classes import CLASS_COST, StructureProduct, partition, product_work
from tests.ot.problems import make_problem, pad_batch


def partition_cost(classes, n_len, m_len, class_cost):
    return sum(
        len(members) * product_work(max(n_len[i] for i in members), max(m_len[i] for i in members))
        + class_cost
        for members in classes
    )


def brute_force_cost(n_len, m_len, class_cost):
    """The least cost over every split of the (n, m)-sorted items into runs."""
    order = sorted(range(len(n_len)), key=lambda i: (n_len[i], m_len[i]))
    best = float("inf")
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        classes, current = [], [order[0]]
        for item, cut in zip(order[1:], cuts):
            if cut:
                classes.append(current)
                current = []
            current.append(item)
        classes.append(current)
        best = min(best, partition_cost(classes, n_len, m_len, class_cost))
    return best


@pytest.mark.parametrize("class_cost", [0.0, 2e4, 2e5, 2e6])
@pytest.mark.parametrize("seed", range(4))
def test_partition_is_the_cheapest_split_into_runs(class_cost, seed):
    gen = torch.Generator().manual_seed(seed)
    n_len = torch.randint(5, 120, (8,), generator=gen).tolist()
    m_len = torch.randint(2, 30, (8,), generator=gen).tolist()
    classes = partition(n_len, m_len, class_cost)
    assert sorted(i for members in classes for i in members) == list(range(8))
    assert partition_cost(classes, n_len, m_len, class_cost) == brute_force_cost(
        n_len, m_len, class_cost
    )


def test_partition_keeps_one_class_when_classes_cost_more_than_the_padding():
    n_len, m_len = [50, 300, 120, 80], [10, 40, 20, 30]
    assert len(partition(n_len, m_len, class_cost=1e12)) == 1
    # free classes: every item alone (the lengths are all different)
    assert len(partition(n_len, m_len, class_cost=0.0)) == 4
    # one long item among short ones is worth its own class at a low class cost
    assert partition([300, 60, 55, 50, 52], [30, 12, 10, 11, 9], class_cost=2e6) == [
        [3, 4, 2, 1], [0]
    ]


def test_partition_of_a_large_batch_uses_bounded_boundaries():
    gen = torch.Generator().manual_seed(0)
    n_len = torch.randint(50, 301, (1000,), generator=gen).tolist()
    m_len = torch.randint(10, 41, (1000,), generator=gen).tolist()
    classes = partition(n_len, m_len, CLASS_COST["cpu"])
    assert sorted(i for members in classes for i in members) == list(range(1000))
    padded = 1000 * product_work(max(n_len), max(m_len))
    useful = sum(map(product_work, n_len, m_len))
    # classes sorted by frames still pad the tokens (10-40 within a class)
    assert useful < partition_cost(classes, n_len, m_len, 0.0) < 0.5 * padded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_product_per_class_added_equals_the_padded_product_added(dtype, monkeypatch):
    monkeypatch.setitem(CLASS_COST, "cpu", 0.0)
    gen = torch.Generator().manual_seed(1)
    n_len, m_len = [40, 7, 23, 40, 1], [5, 9, 1, 3, 6]
    batch, n, m = len(n_len), max(n_len), max(m_len)
    source = torch.zeros(batch, n, n, dtype=dtype)
    target = torch.zeros(batch, m, m, dtype=dtype)
    plan = torch.zeros(batch, n, m, dtype=dtype)
    for b, (nb, mb) in enumerate(zip(n_len, m_len)):
        s = torch.rand(nb, nb, generator=gen, dtype=dtype)
        t = torch.rand(mb, mb, generator=gen, dtype=dtype)
        source[b, :nb, :nb], target[b, :mb, :mb] = s + s.T, t + t.T
        plan[b, :nb, :mb] = torch.rand(nb, mb, generator=gen, dtype=dtype)
    base = torch.randn(batch, n, m, generator=gen, dtype=dtype)
    padded = base - 0.3 * torch.bmm(torch.bmm(source, plan), target)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    product = StructureProduct(source, target, n_len, m_len)
    assert len(product.classes) > 1 and product.efficiency > product.useful_work / product.padded_work
    monkeypatch.setitem(CLASS_COST, "cpu", 1e30)  # a class costs more than any padding
    one_class = StructureProduct(source, target, n_len, m_len)
    assert not one_class.classes
    original = base.clone()
    for structure_product in (product, one_class):
        total = structure_product.add_to(base, plan, -0.3)
        assert torch.allclose(total, padded, rtol=tol, atol=tol)
        for b, (nb, mb) in enumerate(zip(n_len, m_len)):  # padding keeps base exactly
            assert torch.equal(total[b, nb:], base[b, nb:])
            assert torch.equal(total[b, :, mb:], base[b, :, mb:])
    assert torch.equal(base, original)  # not written in place


def test_unrolled_gradient_through_length_classes_passes_gradcheck(monkeypatch):
    monkeypatch.setitem(CLASS_COST, "cpu", 0.0)
    problems = [make_problem(n, m, "monotone", seed=s) for s, (n, m) in enumerate([(6, 4), (3, 2)])]
    cost, c1, c2, n_len, m_len = pad_batch(problems, pad_value=0.0)
    sym = lambda x: 0.5 * (x + x.transpose(-1, -2))  # keep the structures symmetric

    def value(c, s, t):
        return fused_gromov_wasserstein(
            c, sym(s), sym(t), n_len, m_len, epsilon=0.2, gw_weight=0.3,
            outer_iter=3, inner_iter=30, tol=0.0, gradient="unrolled",
        ).value

    inputs = tuple(x.clone().requires_grad_(True) for x in (cost, c1, c2))
    assert torch.autograd.gradcheck(value, inputs, eps=1e-6, atol=1e-6)
