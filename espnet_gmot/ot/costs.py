"""Cost builders for padded batches of sequences (the "geometry" of the OT problems).

Every builder takes padded tensors plus the valid lengths of each item and returns
matrices whose padded cells are exactly zero, so padding values (even ``nan`` or
``inf``) never reach a result or a gradient.
"""

from typing import Optional

import torch


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean mask ``(B, max_len)``, True on the first ``lengths[b]`` positions."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def full_lengths(batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Lengths for an unpadded batch: every item uses all ``length`` positions."""
    return torch.full((batch,), length, dtype=torch.long, device=device)


def uniform_marginals(
    lengths: torch.Tensor, max_len: int, dtype: torch.dtype
) -> torch.Tensor:
    """Uniform masses ``1/lengths[b]`` over the valid positions, zero on padding."""
    mask = length_mask(lengths, max_len)
    return mask.to(dtype) / lengths.to(dtype)[:, None]


def _masked_unit_rows(
    features: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    # Zero padded rows *before* any product: a nan in a padded row would otherwise
    # reach valid cells through the backward pass of the matrix product.
    mask = length_mask(lengths, features.size(1))[..., None]
    features = torch.where(mask, features, torch.zeros_like(features))
    return torch.nn.functional.normalize(features, dim=-1, eps=1e-8)


def cosine_cost(
    source: torch.Tensor,
    target: torch.Tensor,
    source_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """Node cost ``1 - cos(source_i, target_j)`` (TOT eq. 7, ``D_AL``).

    Args:
        source: ``(B, n, d)`` padded features.
        target: ``(B, m, d)`` padded features.
        source_lengths, target_lengths: ``(B,)`` valid lengths.

    Returns:
        ``(B, n, m)`` costs in ``[0, 2]``, zero on padded cells.
    """
    source_unit = _masked_unit_rows(source, source_lengths)
    target_unit = _masked_unit_rows(target, target_lengths)
    cost = 1.0 - torch.bmm(source_unit, target_unit.transpose(1, 2))
    mask = pair_mask(source_lengths, target_lengths, source.size(1), target.size(1))
    return torch.where(mask, cost, torch.zeros_like(cost))


def structure_cost(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Intra-sequence edge cost ``1 - cos(x_i, x_i')`` (GM-OT ``D_A`` / ``D_L``).

    The result is exactly symmetric (the Gromov-Wasserstein gradient below relies
    on it) and zero on padding.

    Args:
        features: ``(B, n, d)`` padded features.
        lengths: ``(B,)`` valid lengths.

    Returns:
        ``(B, n, n)`` costs in ``[0, 2]``.
    """
    cost = cosine_cost(features, features, lengths, lengths)
    return 0.5 * (cost + cost.transpose(1, 2))


def temporal_cost(
    source_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    max_source_len: Optional[int] = None,
    max_target_len: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Temporal-order prior ``d_ij^2`` (TOT eqs. 13 and 19).

    ``d_ij = |i/n - j/m| / sqrt(1/n^2 + 1/m^2)`` is the distance of the point
    ``(i, j)`` to the diagonal of the ``n x m`` grid, with 1-based positions over
    each item's own valid lengths ``n`` and ``m``; padded cells are zero.

    Returns:
        ``(B, max_source_len, max_target_len)`` tensor of ``dtype``.
    """
    n_max = int(source_lengths.max()) if max_source_len is None else max_source_len
    m_max = int(target_lengths.max()) if max_target_len is None else max_target_len
    device = source_lengths.device
    n = source_lengths.to(dtype)[:, None, None]
    m = target_lengths.to(dtype)[:, None, None]
    i = torch.arange(1, n_max + 1, device=device, dtype=dtype)[None, :, None]
    j = torch.arange(1, m_max + 1, device=device, dtype=dtype)[None, None, :]
    squared = (i / n - j / m) ** 2 / (1.0 / n**2 + 1.0 / m**2)
    mask = pair_mask(source_lengths, target_lengths, n_max, m_max)
    return torch.where(mask, squared, torch.zeros_like(squared))


def pair_mask(
    source_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    max_source_len: int,
    max_target_len: int,
) -> torch.Tensor:
    """Boolean ``(B, n, m)`` mask of the cells where both positions are valid."""
    rows = length_mask(source_lengths, max_source_len)
    cols = length_mask(target_lengths, max_target_len)
    return rows[:, :, None] & cols[:, None, :]
