"""Cost builders for padded batches of sequences (the "geometry" of the OT problems).

Every builder takes padded tensors plus the valid lengths of each item and returns
matrices whose padded cells are exactly zero, so padding values (even ``nan`` or
``inf``) never reach a result or a gradient.
"""

from typing import Dict, List, Optional, Sequence, Union

import torch

from espnet_gmot.ot.host import to_host

Lengths = Union[torch.Tensor, Sequence[int]]


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) computes in float32.

    fp16 overflows past 65504 (the temporal prior reaches ``n^2 / 2``) and bf16
    keeps 8 bits of mantissa, so no cost or solver arithmetic runs in them.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_lengths(name: str, lengths: Lengths, batch: Optional[int] = None) -> torch.Tensor:
    """``lengths`` as a 1-D integer tensor; a list or array is converted.

    Checks shape and dtype only (no host read); :class:`InputCheck` checks values.
    """
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must be a 1-D integer tensor or a sequence of ints, got "
                f"{type(lengths).__name__}: {error}"
            ) from None
    if lengths.dtype == torch.bool or lengths.dtype.is_floating_point or lengths.dtype.is_complex:
        raise ValueError(
            f"{name} must hold integer sizes (torch.long), got dtype {lengths.dtype}"
        )
    if lengths.dim() != 1 or (batch is not None and lengths.size(0) != batch):
        expected = f"({batch},)" if batch is not None else "(batch,)"
        raise ValueError(
            f"{name} must have shape {expected}, one length per batch item; "
            f"got {tuple(lengths.shape)}"
        )
    return lengths


class InputCheck:
    """Input checks that need tensor values, read from the device in one go.

    Each ``add_*`` call records a few device scalars; :meth:`read` fetches them all
    with a single host read (one synchronisation per call of a public function),
    raises on the first problem, and returns the named extra values.
    """

    def __init__(self):
        self._pieces: List[torch.Tensor] = []
        self._size = 0
        self._checks = []

    def _push(self, *values: torch.Tensor) -> int:
        """Queue device scalars or vectors; returns the position of the first value."""
        start = self._size
        for value in values:
            flat = value.detach().reshape(-1).to(torch.float64)
            self._pieces.append(flat)
            self._size += flat.numel()
        return start

    def add_lengths(self, name: str, lengths: torch.Tensor, max_len: int) -> None:
        if lengths.numel() == 0:
            return
        start = self._push(lengths.min(), lengths.max())

        def check(values):
            low, high = values[start], values[start + 1]
            if low < 1 or high > max_len:
                raise ValueError(
                    f"{name} must lie in [1, {max_len}] (1 to the padded size; an "
                    f"empty item has no transport plan); got min {int(low)}, max {int(high)}"
                )

        self._checks.append(check)

    def add_finite(
        self, name: str, values: torch.Tensor, low: torch.Tensor, high: torch.Tensor
    ) -> None:
        """Every cell of ``values`` (padding already zeroed, or filled with a
        valid cell's value) must be finite, told from each item's smallest and
        largest cell, ``low`` and ``high`` ``(B,)``, which the caller computes
        anyway: both are finite exactly when the item's cells are (a nan or an
        infinity reaches one of them). NaN or infinite is told apart only on
        failure."""
        if values.numel() == 0:
            return
        bad_items = ~(torch.isfinite(low) & torch.isfinite(high))
        none = torch.full((), -1, dtype=torch.long, device=values.device)
        start = self._push(torch.where(bad_items.any(), bad_items.int().argmax(), none))

        def check(read):
            item = int(read[start])
            if item >= 0 and bool(torch.isnan(values[item].detach()).any()):
                raise ValueError(
                    f"{name} holds NaN in a valid cell of batch item {item} (cells "
                    f"inside the lengths must be numbers; padding may hold anything)"
                )
            if item >= 0:
                raise ValueError(
                    f"{name} holds an infinite value in a valid cell of batch item "
                    f"{item}: costs must be finite; to forbid a pairing use a "
                    f"large finite cost, or leave the cell outside the lengths"
                )

        self._checks.append(check)

    def add_value(self, key: str, value: torch.Tensor) -> None:
        """A device scalar the caller needs on the host anyway (read in the same go)."""
        start = self._push(value)
        self._checks.append(lambda values: self._extra.__setitem__(key, values[start]))

    def add_integers(self, key: str, vector: torch.Tensor) -> None:
        """A device vector of integers the caller needs on the host (same read)."""
        start, size = self._push(vector), vector.numel()
        self._checks.append(
            lambda values: self._extra.__setitem__(
                key, [int(v) for v in values[start:start + size]]
            )
        )

    def read(self) -> Dict[str, object]:
        self._extra: Dict[str, object] = {}
        if self._pieces:
            values = to_host(torch.cat(self._pieces))
            for check in self._checks:
                check(values)
        return self._extra


def check_lengths(
    name: str, lengths: Optional[Lengths], batch: int, max_len: int, device, check: InputCheck
) -> torch.Tensor:
    """Validated lengths on ``device`` (``None`` = unpadded); values checked at ``check.read()``."""
    if lengths is None:
        return full_lengths(batch, max_len, device)
    lengths = as_lengths(name, lengths, batch).to(device)
    check.add_lengths(name, lengths, max_len)
    return lengths


def length_mask(lengths: Lengths, max_len: int) -> torch.Tensor:
    """Boolean mask ``(B, max_len)``, True on the first ``lengths[b]`` positions."""
    lengths = as_lengths("lengths", lengths)
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def full_lengths(batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Lengths for an unpadded batch: every item uses all ``length`` positions."""
    return torch.full((batch,), length, dtype=torch.long, device=device)


def _masked_unit_rows(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    # Zero padded rows *before* any product: a nan in a padded row would otherwise
    # reach valid cells through the backward pass of the matrix product. Normalise
    # in float32 at least: in fp16 the squared norm of a 768-dim row overflows once
    # its entries pass ~9, and eps=1e-8 underflows to 0 (0/0 on padded rows).
    features = features.to(working_dtype(features.dtype))
    mask = length_mask(lengths, features.size(1))[..., None]
    features = torch.where(mask, features, torch.zeros_like(features))
    return torch.nn.functional.normalize(features, dim=-1, eps=1e-8)


def _checked_pair(
    source_lengths: Lengths, target_lengths: Lengths, batch: int, n: int, m: int, device
):
    check = InputCheck()
    source_lengths = check_lengths("source_lengths", source_lengths, batch, n, device, check)
    target_lengths = check_lengths("target_lengths", target_lengths, batch, m, device, check)
    check.read()
    return source_lengths, target_lengths


def cosine_cost(
    source: torch.Tensor,
    target: torch.Tensor,
    source_lengths: Lengths,
    target_lengths: Lengths,
) -> torch.Tensor:
    """Node cost ``1 - cos(source_i, target_j)`` (TOT eq. 7, ``D_AL``).

    Args:
        source: ``(B, n, d)`` padded features.
        target: ``(B, m, d)`` padded features.
        source_lengths, target_lengths: ``(B,)`` valid lengths in ``[1, n]`` and
            ``[1, m]`` (tensors, or sequences of ints).

    Returns:
        ``(B, n, m)`` costs in ``[0, 2]``, zero on padded cells; float64 for
        float64 input, float32 otherwise (fp16/bf16 features are normalised in
        float32, see :func:`working_dtype`).
    """
    source_lengths, target_lengths = _checked_pair(
        source_lengths, target_lengths, source.size(0), source.size(1), target.size(1),
        source.device,
    )
    source_unit = _masked_unit_rows(source, source_lengths)
    target_unit = _masked_unit_rows(target, target_lengths)
    with torch.autocast(device_type=source.device.type, enabled=False):
        cost = 1.0 - torch.bmm(source_unit, target_unit.to(source_unit.dtype).transpose(1, 2))
    mask = pair_mask(source_lengths, target_lengths, source.size(1), target.size(1))
    return torch.where(mask, cost, torch.zeros_like(cost))


def structure_cost(features: torch.Tensor, lengths: Lengths) -> torch.Tensor:
    """Intra-sequence edge cost ``1 - cos(x_i, x_i')`` (GM-OT ``D_A`` / ``D_L``).

    The result is exactly symmetric (the Gromov-Wasserstein gradient below relies
    on it) and zero on padding.

    Args:
        features: ``(B, n, d)`` padded features.
        lengths: ``(B,)`` valid lengths in ``[1, n]``.

    Returns:
        ``(B, n, n)`` costs in ``[0, 2]`` (dtype as :func:`cosine_cost`).
    """
    cost = cosine_cost(features, features, lengths, lengths)
    return 0.5 * (cost + cost.transpose(1, 2))


def temporal_cost(
    source_lengths: Lengths,
    target_lengths: Lengths,
    max_source_len: Optional[int] = None,
    max_target_len: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Temporal-order prior ``d_ij^2`` (TOT eqs. 13 and 19).

    ``d_ij = |i/n - j/m| / sqrt(1/n^2 + 1/m^2)`` is the distance of the point
    ``(i, j)`` to the diagonal of the ``n x m`` grid, with 1-based positions over
    each item's own valid lengths ``n`` and ``m``; padded cells are zero.

    Computed as ``(i m - j n)^2 / (n^2 + m^2)`` (the same quantity, one rounding
    fewer) in float32 at least: it reaches ``~n^2 / 2`` (45,000 for 300 x 300),
    beyond fp16's range, and bf16 would round it by hundreds.

    Returns:
        ``(B, max_source_len, max_target_len)`` tensor of ``working_dtype(dtype)``
        (float64 for float64, float32 for every other requested dtype).
    """
    dtype = working_dtype(dtype)
    source_lengths = as_lengths("source_lengths", source_lengths)
    target_lengths = as_lengths("target_lengths", target_lengths, source_lengths.size(0))
    target_lengths = target_lengths.to(source_lengths.device)
    if max_source_len is None or max_target_len is None:
        # Sizes from the lengths themselves (one host read, the only one here).
        n_top, m_top = to_host(torch.stack((source_lengths.max(), target_lengths.max())))
        max_source_len = n_top if max_source_len is None else max_source_len
        max_target_len = m_top if max_target_len is None else max_target_len
    source_lengths, target_lengths = _checked_pair(
        source_lengths, target_lengths, source_lengths.size(0), max_source_len,
        max_target_len, source_lengths.device,
    )
    device = source_lengths.device
    n = source_lengths.to(dtype)[:, None, None]
    m = target_lengths.to(dtype)[:, None, None]
    i = torch.arange(1, max_source_len + 1, device=device, dtype=dtype)[None, :, None]
    j = torch.arange(1, max_target_len + 1, device=device, dtype=dtype)[None, None, :]
    squared = (i * m - j * n) ** 2 / (n**2 + m**2)
    mask = pair_mask(source_lengths, target_lengths, max_source_len, max_target_len)
    return torch.where(mask, squared, torch.zeros_like(squared))


def pair_mask(
    source_lengths: Lengths,
    target_lengths: Lengths,
    max_source_len: int,
    max_target_len: int,
) -> torch.Tensor:
    """Boolean ``(B, n, m)`` mask of the cells where both positions are valid."""
    rows = length_mask(source_lengths, max_source_len)
    cols = length_mask(target_lengths, max_target_len)
    return rows[:, :, None] & cols[:, None, :]
