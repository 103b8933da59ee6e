"""FGW's structure product per length class, without the padding's waste.

Each mirror-descent step of :mod:`espnet_gmot.ot.gromov` multiplies the plan by
both structures, ``C1 P C2``: ``n^2 m + n m^2`` multiply-adds per item. On a
padded batch every item pays for the longest one, ``n_max^2 m_max + ...``; with
frames spread over 50-300 (a batch of unsorted utterances) that is about three
times the sum over the items.

The items are therefore split into *length classes*: contiguous runs of the
batch sorted by frame count, each padded only to its own longest item, so that
a step costs ``sum_c |c| (n_c^2 m_c + n_c m_c^2)``. Every class adds a few
kernel launches per step (two ``bmm``, a gather, a pad), so the partition
minimises that sum plus a fixed cost per class (:data:`CLASS_COST`), exactly,
by dynamic programming over the sorted items. On a GPU, where the solver is
bound by launches rather than arithmetic, the fixed cost is large and a batch
stays one class unless its padding wastes a great deal; ESPnet's length-sorted
batches (``batch_type: numel`` or ``folded``) are nearly one class anyway.

Why classes rather than a product per item or a sorted batch: a loop over items
costs ``B`` launches per step; sorting the whole problem would permute every
tensor of the solve and its gradients. Classes touch only the product: the
structures are cut once per solve, the plan is gathered per step, and the
result is added into the padded layout every other step of the solver uses. The
zero padding inside a class contributes exact zeros, so the product equals the
padded one up to the order of floating-point summation.
"""

from typing import List, Sequence, Tuple

import torch

# The fixed cost of one more class per mirror-descent step, in multiply-adds of
# the product: about its extra launches' time at the device's throughput (a few
# hundred microseconds for a gather, two small products and a pad at tens of
# GFLOP/s on two CPU cores; a few microseconds each at tens of TFLOP/s on a
# GPU). An order of magnitude is what matters: the partition only changes where
# the waste and this cost are close.
CLASS_COST = {"cpu": 2.0e7, "cuda": 1.0e9}

# Candidate class boundaries at most this many positions of the sorted batch
# (evenly spread), so that the partition costs O(64^2) on the host at any batch.
MAX_BOUNDARIES = 64


def product_work(n: int, m: int) -> int:
    """Multiply-adds of ``C1 P C2`` for one ``n x m`` plan."""
    return n * n * m + n * m * m


def partition(
    source_lengths: Sequence[int], target_lengths: Sequence[int], class_cost: float
) -> List[List[int]]:
    """Items grouped into length classes (lists of batch indices) minimising
    ``sum_c |c| product_work(n_c, m_c) + class_cost * (number of classes)``,
    each class a contiguous run of the items sorted by ``(n, m)``."""
    order = sorted(range(len(source_lengths)), key=lambda i: (source_lengths[i], target_lengths[i]))
    if len(order) <= 1:
        return [order]
    step = max(1, -(-len(order) // MAX_BOUNDARIES))
    cuts = list(range(0, len(order), step)) + [len(order)]
    # the most tokens of each run between two candidate boundaries
    chunk_tokens = [max(target_lengths[i] for i in order[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
    # best[k]: least cost of the items before cuts[k]; previous[k]: where its last class starts
    best = [0.0] + [float("inf")] * (len(cuts) - 1)
    previous = [0] * len(cuts)
    for end in range(1, len(cuts)):
        n_class = source_lengths[order[cuts[end] - 1]]  # sorted: the class's last item is longest
        m_class = 0
        for start in range(end - 1, -1, -1):
            m_class = max(m_class, chunk_tokens[start])
            size = cuts[end] - cuts[start]
            total = best[start] + size * product_work(n_class, m_class) + class_cost
            if total < best[end]:
                best[end], previous[end] = total, start
    classes, end = [], len(cuts) - 1
    while end > 0:
        start = previous[end]
        classes.append(order[cuts[start]:cuts[end]])
        end = start
    return classes[::-1]


class StructureProduct:
    """``C1 P C2`` for one solve's structures, per length class.

    Args:
        source_structure: ``(B, n, n)`` ``C1``, zero on padding.
        target_structure: ``(B, m, m)`` ``C2``, zero on padding.
        source_lengths, target_lengths: the items' valid sizes, on the host.

    One class (the whole padded batch) when that is cheapest: then the product
    is the plain batched one and nothing is copied.
    """

    def __init__(
        self,
        source_structure: torch.Tensor,
        target_structure: torch.Tensor,
        source_lengths: Sequence[int],
        target_lengths: Sequence[int],
    ):
        batch, n, _ = source_structure.shape
        m = target_structure.size(1)
        class_cost = CLASS_COST.get(source_structure.device.type, CLASS_COST["cuda"])
        classes = partition(source_lengths, target_lengths, class_cost) if batch else [[]]
        self.padded_work = batch * product_work(n, m)
        self.useful_work = sum(map(product_work, source_lengths, target_lengths))
        self.source_structure, self.target_structure = source_structure, target_structure
        self.classes: List[Tuple[torch.Tensor, int, int, torch.Tensor, torch.Tensor]] = []
        self.class_work = self.padded_work  # what the product computes
        if len(classes) > 1:
            device = source_structure.device
            self.class_work = 0
            for members in classes:
                n_c = max(source_lengths[i] for i in members)
                m_c = max(target_lengths[i] for i in members)
                self.class_work += len(members) * product_work(n_c, m_c)
                index = torch.tensor(members, device=device)
                # cut once per solve (the structures do not change between
                # steps), copying only the class's own box
                self.classes.append((
                    index, n_c, m_c,
                    source_structure[:, :n_c, :n_c].index_select(0, index),
                    target_structure[:, :m_c, :m_c].index_select(0, index),
                ))

    @property
    def efficiency(self) -> float:
        """Useful share of the product's arithmetic (1: no padding computed)."""
        return self.useful_work / self.class_work if self.class_work else 1.0

    def add_to(self, base: torch.Tensor, plan: torch.Tensor, scale: float) -> torch.Tensor:
        """``base + scale * C1 plan C2``, ``(B, n, m)``: the product is zero on
        padding, so padded cells keep ``base``. Fused, because the solver only
        ever needs the product inside such a sum (FGW's gradient and its
        square-loss term): one ``baddbmm`` on one class, an in-place add into
        a copy of ``base`` per class otherwise, with no padded product built."""
        if not self.classes:
            return torch.baddbmm(
                base, torch.bmm(self.source_structure, plan), self.target_structure, alpha=scale
            )
        total = base.clone()
        for index, n_c, m_c, source, target in self.classes:
            part = plan[:, :n_c, :m_c].index_select(0, index)
            # the classes' items are disjoint: each box is written once
            total[:, :n_c, :m_c].index_add_(
                0, index, torch.bmm(torch.bmm(source, part), target), alpha=scale
            )
        return total
