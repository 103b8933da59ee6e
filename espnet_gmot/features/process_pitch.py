"""Kaldi-compatible pitch post-processing without Kaldi.

Re-implements Kaldi's ``process-kaldi-pitch-feats`` (``kaldi::ProcessPitch``
in ``src/feat/pitch-functions.cc``), which turns the ``(nccf, pitch)`` frames
of ``compute-kaldi-pitch-feats`` (:func:`espnet_gmot.features.pitch.compute_kaldi_pitch`)
into the POV feature, the mean-subtracted log pitch and the delta pitch.  The
output is checked against Kaldi's own code, compiled from source (see
``tests/features/fixtures/README.md``).
"""

import warnings
from typing import Any, Dict, Optional

import numpy as np
import torch

from espnet_gmot.features.pitch import ArrayLike

__all__ = [
    "process_kaldi_pitch",
    "nccf_to_pov_feature",
    "nccf_to_pov",
    "glibc_rand_gauss",
]

_F32 = np.float32


def nccf_to_pov_feature(nccf: np.ndarray) -> np.ndarray:
    """Kaldi's ``NccfToPovFeature``: ``(1.0001 - clip(n, -1, 1))**0.15 - 1``."""
    return (1.0001 - np.clip(nccf, -1.0, 1.0)) ** 0.15 - 1.0


def nccf_to_pov(nccf: np.ndarray) -> np.ndarray:
    """Kaldi's ``NccfToPov``: probability of voicing from the NCCF.

    ``n = min(|nccf|, 1)``;
    ``r = -5.2 + 5.4 e^{7.5 (n - 1)} + 4.8 n - 2 e^{-10 n} + 4.2 e^{20 (n - 1)}``;
    ``p = 1 / (1 + e^{-r})``.
    """
    n = np.minimum(np.abs(nccf), 1.0)
    r = (
        -5.2
        + 5.4 * np.exp(7.5 * (n - 1.0))
        + 4.8 * n
        - 2.0 * np.exp(-10.0 * n)
        + 4.2 * np.exp(20.0 * (n - 1.0))
    )
    return 1.0 / (1.0 + np.exp(-r))


_GLIBC_RAND_MAX = 2147483647


def _glibc_rand(seed: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of glibc's ``rand()`` after ``srand(seed)``.

    glibc's default generator (TYPE_3) is an additive lagged-Fibonacci
    generator ``r[i] = r[i-3] + r[i-31] (mod 2**32)`` seeded by a
    Park-Miller LCG and warmed up for 310 steps; outputs are ``r[i] >> 1``.
    """
    seed = seed & 0xFFFFFFFF
    if seed == 0:
        seed = 1  # glibc treats srand(0) as srand(1).
    state = [0] * 34
    state[0] = seed - (1 << 32) if seed >= (1 << 31) else seed  # int32_t
    for i in range(1, 31):
        # Park-Miller "minimal standard" step (Schrage's method) on int32,
        # with C's truncating division.
        word = state[i - 1]
        hi = abs(word) // 127773 * (1 if word >= 0 else -1)
        lo = word - hi * 127773
        word = 16807 * lo - 2836 * hi
        if word < 0:
            word += 2147483647
        state[i] = word
    for i in range(31, 34):
        state[i] = state[i - 31]
    values = [v & 0xFFFFFFFF for v in state]
    total = 344 + count
    values.extend([0] * (total - 34))
    for i in range(34, total):
        values[i] = (values[i - 31] + values[i - 3]) & 0xFFFFFFFF
    return np.asarray(values[344:], dtype=np.int64) >> 1


def glibc_rand_gauss(seed: int, count: int) -> np.ndarray:
    """Kaldi's ``RandGauss()`` stream after ``srand(seed)`` (glibc ``rand()``).

    ``RandGauss = sqrtf(-2 log(u1)) * cosf(2 pi u2)`` with
    ``u = (rand() + 1) / (RAND_MAX + 2)`` (Box-Muller), drawing ``u1``
    before ``u2`` as GCC-compiled Kaldi does.  This is the noise
    ``process-kaldi-pitch-feats --srand=seed`` adds to the delta pitch of the
    first utterance it processes.
    """
    draws = _glibc_rand(seed, 2 * count).astype(np.float64)
    uniform = ((draws + 1.0) / (_GLIBC_RAND_MAX + 2.0)).astype(_F32)
    u1, u2 = uniform[0::2].astype(np.float64), uniform[1::2].astype(np.float64)
    radius = np.sqrt((-2.0 * np.log(u1)).astype(_F32))
    return (radius * np.cos((2.0 * np.pi * u2).astype(_F32))).astype(_F32)


def _renamed_option(given: Dict[str, Any], old: str, new: str, value: Any) -> Any:
    """``value`` of option ``new``, or of its deprecated name ``old`` when that was given."""
    unknown = sorted(set(given) - {old})
    if unknown:
        raise TypeError(f"process_kaldi_pitch() got unexpected keyword arguments {unknown}")
    if old not in given:
        return value
    warnings.warn(
        f"process_kaldi_pitch: option '{old}' is deprecated and will be removed in the next "
        f"release; use '{new}' (Kaldi's --{new}).",
        FutureWarning,
        stacklevel=3,
    )
    return given[old]


def process_kaldi_pitch(
    pitch: ArrayLike,
    *,
    pitch_scale: float = 2.0,
    pov_scale: float = 2.0,
    pov_offset: float = 0.0,
    delta_pitch_scale: float = 10.0,
    delta_pitch_noise_stddev: float = 0.005,
    normalization_left_context: int = 75,
    normalization_right_context: int = 75,
    delta_window: int = 2,
    delay: int = 0,
    add_pov_feature: bool = True,
    add_normalized_log_pitch: bool = True,
    add_delta_pitch: bool = True,
    add_raw_log_pitch: bool = False,
    srand: Optional[int] = 0,
    **deprecated: Any,
) -> ArrayLike:
    """Post-process ``(nccf, pitch)`` like Kaldi's ``process-kaldi-pitch-feats``.

    Output columns, in this order and each only if enabled:

    * ``add_pov_feature``: ``pov_scale * NccfToPovFeature(nccf) + pov_offset``.
    * ``add_normalized_log_pitch``: ``pitch_scale * (log(pitch[t]) - m[t])``
      where ``m[t]`` is the mean of ``log(pitch)`` over frames
      ``[t - normalization_left_context, t + normalization_right_context]``
      (clipped to the utterance) weighted by ``NccfToPov(nccf)``.
    * ``add_delta_pitch``: ``delta_pitch_scale * (delta[t] + noise[t])`` where
      ``delta`` is Kaldi's ``ComputeDeltas`` (order 1, ``delta_window``,
      edge frames replicated) of ``log(pitch)`` and ``noise`` is Gaussian
      with ``delta_pitch_noise_stddev`` (Kaldi's dithering of the quantised
      pitch).
    * ``add_raw_log_pitch``: ``log(pitch)``.

    With ``delay > 0`` the output has ``delay`` more frames, frame ``t``
    carrying the features of input frame ``max(0, t - delay)``.

    Args:
        pitch: ``(frames, 2)`` output of :func:`compute_kaldi_pitch`.
        srand: Kaldi's ``--srand``, the seed of the delta-pitch noise.  An
            integer reproduces Kaldi's (default 0) noise stream, restarted for every
            utterance (Kaldi continues one stream across the utterances of a
            job, so only a job's first utterance is bit-identical).  ``None``
            draws fresh non-reproducible noise.  Set
            ``delta_pitch_noise_stddev=0`` for noise-free features.
            ``srand_seed``, its former name, still works in this release with
            a ``FutureWarning``.

    Returns:
        ``(frames + delay, num_enabled_features)`` float32; a torch tensor if
        ``pitch`` is one, otherwise a numpy array.
    """
    srand = _renamed_option(deprecated, "srand_seed", "srand", srand)
    is_tensor = isinstance(pitch, torch.Tensor)
    array = pitch.detach().cpu().numpy() if is_tensor else np.asarray(pitch)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"pitch must have shape (frames, 2), got {array.shape}")
    num_features = sum(
        [add_pov_feature, add_normalized_log_pitch, add_delta_pitch, add_raw_log_pitch]
    )
    if num_features == 0:
        raise ValueError("At least one of the pitch features must be enabled.")
    num_frames = array.shape[0]
    nccf = array[:, 0].astype(np.float64)
    raw_pitch = array[:, 1].astype(np.float64)
    if np.any(raw_pitch <= 0):
        raise ValueError("pitch values must be positive (column 1 of the input)")
    log_pitch = np.log(raw_pitch)

    columns = []
    if add_pov_feature:
        columns.append(pov_scale * nccf_to_pov_feature(nccf) + pov_offset)
    if add_normalized_log_pitch:
        pov = nccf_to_pov(nccf)
        cum_pov = np.concatenate([[0.0], np.cumsum(pov)])
        cum_weighted = np.concatenate([[0.0], np.cumsum(pov * log_pitch)])
        frames = np.arange(num_frames)
        begin = np.maximum(0, frames - normalization_left_context)
        end = np.minimum(num_frames, frames + normalization_right_context + 1)
        average = (cum_weighted[end] - cum_weighted[begin]) / (cum_pov[end] - cum_pov[begin])
        columns.append(pitch_scale * (log_pitch - average))
    if add_delta_pitch:
        offsets = np.arange(-delta_window, delta_window + 1)
        weights = offsets / float(np.sum(offsets * offsets))
        neighbours = np.clip(np.arange(num_frames)[:, None] + offsets[None, :], 0, num_frames - 1)
        delta = log_pitch[neighbours] @ weights
        if delta_pitch_noise_stddev != 0.0:
            if srand is None:
                gauss = np.random.default_rng().standard_normal(num_frames)
            else:
                gauss = glibc_rand_gauss(srand, num_frames).astype(np.float64)
            delta = delta + gauss * delta_pitch_noise_stddev
        columns.append(delta_pitch_scale * delta)
    if add_raw_log_pitch:
        columns.append(log_pitch)

    features = np.stack(columns, axis=1).astype(_F32)
    if delay > 0:
        features = features[np.maximum(0, np.arange(num_frames + delay) - delay)]
    return torch.from_numpy(features) if is_tensor else features
