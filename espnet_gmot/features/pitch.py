"""Kaldi-compatible pitch tracking without Kaldi.

This module re-implements, in vectorised numpy, the algorithm behind Kaldi's
``compute-kaldi-pitch-feats`` (``kaldi::ComputeKaldiPitch`` in
``src/feat/pitch-functions.cc``; Ghahremani et al., "A pitch extraction
algorithm tuned for automatic speech recognition", ICASSP 2014), with the API
of torchaudio 2.0's ``torchaudio.functional.compute_kaldi_pitch`` (removed in
torchaudio 2.1).  The post-processing, ``process-kaldi-pitch-feats``, is in
:mod:`espnet_gmot.features.process_pitch`.  The output is checked against
Kaldi's own code, compiled from source (see
``tests/features/fixtures/README.md``).

Note on torchaudio 2.0: its port of Kaldi re-implemented ``kaldi::Vector`` on
torch tensors, and ``Vector::Swap`` swaps the tensors but not the cached raw
data pointers that ``PitchFrameInfo::ComputeBacktraces`` reads and writes.  The
Viterbi forward costs are therefore mixed up between buffers, one of which is
freed after the first ``AcceptWaveform`` call, so torchaudio 2.0's pitch
differs from Kaldi's for non-stationary signals and is not even
deterministic (repeated calls on the same input can return different octaves).
This module follows Kaldi, not torchaudio 2.0.

Pipeline of :func:`compute_kaldi_pitch` (Kaldi option names in quotes):

1. Low-pass filter and downsample the waveform to "resample-frequency" with
   Kaldi's windowed-sinc ``LinearResample`` (Hann-windowed sinc with
   "lowpass-cutoff" and "lowpass-filter-width" zeros).
2. Cut the downsampled signal into frames of "frame-length" every
   "frame-shift" and compute, for every integer lag between
   ``1/max_f0`` and ``1/min_f0`` (widened by the upsampling filter), the
   normalised cross-correlation function (NCCF) twice: with the
   "nccf-ballast" term in the denominator (used for the pitch search) and
   without it (used for the probability-of-voicing output).
3. Upsample both NCCFs onto a log-spaced lag grid (ratio ``1 + delta_pitch``)
   with Kaldi's ``ArbitraryResample`` ("upsample-filter-width" zeros).
4. Run a Viterbi search over the log-spaced lags with local cost
   ``1 - nccf * (1 - soft_min_f0 * lag)`` and transition cost
   ``penalty_factor * (log(1 + delta_pitch) * (i - j))**2``.
5. Output per frame ``(nccf_without_ballast, 1 / lag)`` on the best path.

Online/chunked operation ("frames-per-chunk", "simulate-first-pass-online") is
not implemented; the offline default is reproduced exactly, including Kaldi's
two-pass treatment of the signal end (the resampler flush) and the
"recompute-frame" re-scaling of the ballast term.
"""

from functools import lru_cache
from math import gcd
from typing import Tuple, Union

import numpy as np
import torch
from scipy.optimize import isotonic_regression

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["compute_kaldi_pitch"]

_F32 = np.float32


# --------------------------------------------------------------------------
# Windowed-sinc resampling (Kaldi's LinearResample / ArbitraryResample)
# --------------------------------------------------------------------------
def _windowed_sinc(t: np.ndarray, cutoff: float, num_zeros: int) -> np.ndarray:
    """Hann-windowed sinc low-pass filter h(t) of Kaldi's resamplers.

    ``h(t) = 2 fc sinc(2 fc t) * 0.5 (1 + cos(2 pi fc t / num_zeros))`` for
    ``|t| < num_zeros / (2 fc)`` and 0 outside.
    """
    t = np.asarray(t, dtype=np.float64)
    half_width = num_zeros / (2.0 * cutoff)
    window = np.where(
        np.abs(t) < half_width,
        0.5 * (1.0 + np.cos(2.0 * np.pi * cutoff / num_zeros * t)),
        0.0,
    )
    safe_t = np.where(t == 0.0, 1.0, t)
    sinc = np.where(t == 0.0, 2.0 * cutoff, np.sin(2.0 * np.pi * cutoff * t) / (np.pi * safe_t))
    return sinc * window


@lru_cache(maxsize=16)
def _linear_resample_table(
    samp_rate_in: int, samp_rate_out: int, cutoff: float, num_zeros: int
) -> Tuple[int, int, Tuple[int, ...], Tuple[np.ndarray, ...]]:
    """Per-phase first input index and filter weights of ``LinearResample``.

    The output/input sample pattern repeats every ``gcd``-unit, so only
    ``samp_rate_out / gcd`` distinct filters exist.
    """
    base = gcd(samp_rate_in, samp_rate_out)
    in_unit, out_unit = samp_rate_in // base, samp_rate_out // base
    window_width = num_zeros / (2.0 * cutoff)
    first_index, weights = [], []
    for i in range(out_unit):
        output_t = i / float(samp_rate_out)
        min_input = int(np.ceil((output_t - window_width) * samp_rate_in))
        max_input = int(np.floor((output_t + window_width) * samp_rate_in))
        input_t = np.arange(min_input, max_input + 1) / float(samp_rate_in)
        # Kaldi evaluates the filter in single precision.
        delta_t = (input_t - output_t).astype(_F32).astype(np.float64)
        first_index.append(min_input)
        weights.append(_windowed_sinc(delta_t, cutoff, num_zeros) / samp_rate_in)
    return in_unit, out_unit, tuple(first_index), tuple(weights)


def _resample_num_output(
    samp_rate_in: int,
    samp_rate_out: int,
    cutoff: float,
    num_zeros: int,
    num_input: int,
    flush: bool,
) -> int:
    """``LinearResample::GetNumOutputSamples`` (exact tick arithmetic)."""
    tick_freq = samp_rate_in * samp_rate_out // gcd(samp_rate_in, samp_rate_out)
    interval = num_input * (tick_freq // samp_rate_in)
    if not flush:
        window_width = _F32(num_zeros / (2.0 * float(_F32(cutoff))))
        interval -= int(np.floor(window_width * _F32(tick_freq)))
    if interval <= 0:
        return 0
    ticks_per_output = tick_freq // samp_rate_out
    last = interval // ticks_per_output
    if last * ticks_per_output == interval:
        last -= 1
    return last + 1


def _linear_resample(
    wave: np.ndarray,
    samp_rate_in: int,
    samp_rate_out: int,
    cutoff: float,
    num_zeros: int,
    num_output: int,
) -> np.ndarray:
    """First ``num_output`` samples of the resampled, zero-extended signal."""
    in_unit, out_unit, first_index, weights = _linear_resample_table(
        samp_rate_in, samp_rate_out, float(cutoff), num_zeros
    )
    out = np.zeros(num_output, dtype=np.float64)
    if num_output == 0:
        return out
    left = max(0, -min(first_index))
    num_units = -(-num_output // out_unit)
    max_taps = max(len(w) for w in weights)
    right = max(0, (num_units + 1) * in_unit + max(first_index) + max_taps - len(wave))
    padded = np.concatenate([np.zeros(left), wave, np.zeros(right)])
    stride = padded.strides[0]
    for phase in range(out_unit):
        count = len(range(phase, num_output, out_unit))
        if count == 0:
            continue
        start = first_index[phase] + left
        taps = len(weights[phase])
        # windows[u] = padded[start + u * in_unit : start + u * in_unit + taps]
        windows = np.lib.stride_tricks.as_strided(
            padded[start:], shape=(count, taps), strides=(in_unit * stride, stride)
        )
        out[phase::out_unit] = windows @ weights[phase]
    return out


@lru_cache(maxsize=16)
def _lag_tables(
    resample_frequency: float,
    min_f0: float,
    max_f0: float,
    delta_pitch: float,
    upsample_filter_width: int,
) -> Tuple[int, int, np.ndarray, np.ndarray]:
    """Measured integer lags, log-spaced lags and the NCCF upsampling matrix.

    Returns ``(first_lag, last_lag, lags, upsample)`` where ``lags`` are the
    log-spaced lags in seconds (``SelectLags``, computed in single precision
    as Kaldi does so the output pitch values are bit-identical) and
    ``upsample`` has shape ``(last_lag - first_lag + 1, len(lags))`` and
    implements ``ArbitraryResample`` as a matrix product.
    """
    fs = float(resample_frequency)
    outer_min_lag = 1.0 / max_f0 - upsample_filter_width / (2.0 * fs)
    outer_max_lag = 1.0 / min_f0 + upsample_filter_width / (2.0 * fs)
    first_lag = int(np.ceil(fs * outer_min_lag))
    last_lag = int(np.floor(fs * outer_max_lag))

    lags = []
    lag = _F32(1.0 / float(_F32(max_f0)))
    max_lag = _F32(1.0 / float(_F32(min_f0)))
    ratio = 1.0 + float(_F32(delta_pitch))
    while lag <= max_lag:
        lags.append(lag)
        lag = _F32(float(lag) * ratio)
    lags = np.asarray(lags, dtype=_F32)

    # ArbitraryResample: the measured NCCF is a signal sampled at fs that
    # starts at lag first_lag / fs.
    num_in = last_lag - first_lag + 1
    cutoff = fs * 0.5
    points = (lags - _F32(_F32(first_lag) / _F32(fs))).astype(_F32)
    filter_width = _F32(upsample_filter_width / (2.0 * cutoff))
    index_min = np.ceil(_F32(fs) * (points - filter_width)).astype(np.int64)
    index_max = np.floor(_F32(fs) * (points + filter_width)).astype(np.int64)
    index_min = np.maximum(index_min, 0)
    index_max = np.minimum(index_max, num_in - 1)
    upsample = np.zeros((num_in, len(lags)), dtype=np.float64)
    for i, (lo, hi) in enumerate(zip(index_min, index_max)):
        j = np.arange(lo, hi + 1)
        delta_t = (points[i] - (j.astype(_F32) / _F32(fs))).astype(_F32)
        upsample[lo : hi + 1, i] = (
            _windowed_sinc(delta_t.astype(np.float64), cutoff, upsample_filter_width) / fs
        )
    return first_lag, last_lag, lags, upsample


# --------------------------------------------------------------------------
# NCCF
# --------------------------------------------------------------------------
def _frames_available(
    num_samples: int,
    window_size: int,
    window_shift: int,
    last_lag: int,
    input_finished: bool,
    snip_edges: bool,
) -> int:
    """``OnlinePitchFeatureImpl::NumFramesAvailable``."""
    frame_length = window_size if input_finished else window_size + last_lag
    if num_samples < frame_length:
        return 0
    if snip_edges:
        return (num_samples - frame_length) // window_shift + 1
    if input_finished:
        return int(_F32(num_samples) / _F32(window_shift) + _F32(0.5))
    return int(_F32(num_samples - frame_length // 2) / _F32(window_shift) + _F32(0.5))


def _nccf(
    signal: np.ndarray,
    starts: np.ndarray,
    window_size: int,
    first_lag: int,
    last_lag: int,
    ballast: np.ndarray,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NCCF with and without ballast for frames starting at ``starts``.

    Follows Kaldi's ``ComputeCorrelation``/``ComputeNccf``: each frame of
    ``window_size + last_lag`` samples has the mean of its first
    ``window_size`` samples removed; for lag ``l`` the numerator is
    ``<w[0:W], w[l:l+W]>`` and the denominator ``sqrt(e1 * e2 + ballast)``.

    Returns ``(nccf_pitch, nccf_pov, avg_norm_prod)``.
    """
    full_length = window_size + last_lag
    num_frames = len(starts)
    left = max(0, -int(starts.min())) if num_frames else 0
    right = max(0, int(starts.max()) + full_length - len(signal)) if num_frames else 0
    padded = np.concatenate([np.zeros(left), signal, np.zeros(right)])
    frames = padded[starts[:, None] + left + np.arange(full_length)[None, :]]
    frames -= frames[:, :window_size].mean(axis=1, keepdims=True)

    # Cross-correlation by FFT: a circular size >= full_length has no
    # wrap-around for the first window_size samples against lags <= last_lag.
    fft_size = 1 << int(np.ceil(np.log2(full_length)))
    spec_head = np.fft.rfft(frames[:, :window_size], n=fft_size)
    spec_full = np.fft.rfft(frames, n=fft_size)
    corr = np.fft.irfft(np.conj(spec_head) * spec_full, n=fft_size)
    inner = corr[:, first_lag : last_lag + 1]

    energy = np.concatenate(
        [np.zeros((num_frames, 1)), np.cumsum(frames * frames, axis=1)], axis=1
    )
    e1 = energy[:, window_size]
    lag_range = np.arange(first_lag, last_lag + 1)
    e2 = energy[:, lag_range + window_size] - energy[:, lag_range]
    norm_prod = e1[:, None] * e2

    def normalise(denominator_sq: np.ndarray) -> np.ndarray:
        denominator = np.sqrt(denominator_sq)
        safe = np.where(denominator == 0.0, 1.0, denominator)
        return np.where(denominator == 0.0, 0.0, inner / safe)

    nccf_pitch = normalise(norm_prod + ballast[:, None])
    nccf_pov = normalise(norm_prod)
    return nccf_pitch, nccf_pov, norm_prod.mean(axis=1)


def _approx_equal(a: float, b: float, tolerance: float) -> bool:
    """Kaldi's ``ApproxEqual`` (relative tolerance, single precision)."""
    a, b = _F32(a), _F32(b)
    if a == b:
        return True
    diff = abs(a - b)
    if not np.isfinite(diff):
        return False
    return bool(diff <= _F32(tolerance) * (abs(a) + abs(b)))


# --------------------------------------------------------------------------
# Viterbi over log-spaced lags
# --------------------------------------------------------------------------
def _lower_hull(y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Lower convex hull of the points ``(j, y[j])``, ``j = 0 .. len(y) - 1``.

    Returns ``(vertices, edge_slopes)``.  The slopes of the greatest convex
    minorant are the isotonic (non-decreasing) regression of the successive
    differences ``y[j + 1] - y[j]`` (pool-adjacent-violators, scipy's C++
    implementation), and its vertices are the boundaries of the pooled blocks.
    """
    fit = isotonic_regression(np.diff(y))
    return fit.blocks, fit.x[fit.blocks[:-1]]


class _Transition:
    """``min_j prev[j] + c (i - j)^2`` over the log-spaced lag states.

    Kaldi's ``PitchFrameInfo::ComputeBacktraces`` finds, for each state
    ``i``, the exact minimum over ``j`` with a bounded search.  Here the
    minimisation is a min-convolution with a parabola: with
    ``g(j) = prev[j] + c j^2`` the best ``j`` minimises ``g(j) - 2 c i j``,
    i.e. it is the first vertex of the lower convex hull of ``g`` whose
    outgoing edge slope is ``>= 2 c i``.  Costs are then evaluated in single
    precision exactly as Kaldi accumulates them, so the forward costs do not
    drift away from Kaldi's over long utterances.
    """

    def __init__(self, num_states: int, inter_frame_factor: float):
        self.states = np.arange(num_states)
        factor32 = _F32(inter_frame_factor)
        offsets = np.arange(-num_states + 1, num_states)
        # Kaldi: (j - i) * (j - i) * inter_frame_factor, int times float.
        self.penalty = (offsets * offsets).astype(_F32) * factor32
        self.quadratic = float(factor32) * self.states.astype(np.float64) ** 2
        self.query_slopes = 2.0 * float(factor32) * self.states
        self.num_states = num_states

    def __call__(self, prev: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        vertices, slopes = _lower_hull(prev.astype(np.float64) + self.quadratic)
        best = vertices[np.searchsorted(slopes, self.query_slopes, side="left")]
        cost = prev[best] + self.penalty[best - self.states + self.num_states - 1]
        return cost, best


def _viterbi(local_cost: np.ndarray, inter_frame_factor: float) -> np.ndarray:
    """Best lag-state sequence of Kaldi's pitch Viterbi search.

    ``forward[t, i] = min_j (forward[t-1, j] + c (i - j)^2) + local_cost[t, i]``
    with ``c = inter_frame_factor``, forward costs renormalised to a minimum
    of 0 every frame and kept in single precision (as in Kaldi); the path is
    traced back from the best final state.
    """
    num_frames, num_states = local_cost.shape
    transition = _Transition(num_states, inter_frame_factor)
    costs = local_cost.astype(_F32)
    backpointers = np.empty((num_frames, num_states), dtype=np.int64)
    forward = np.zeros(num_states, dtype=_F32)
    for t in range(num_frames):
        forward, backpointers[t] = transition(forward)
        forward += costs[t]
        forward -= forward.min()
    return _traceback(backpointers, forward)


def _traceback(backpointers: np.ndarray, final_cost: np.ndarray) -> np.ndarray:
    num_frames = len(backpointers)
    path = np.empty(num_frames, dtype=np.int64)
    if num_frames == 0:
        return path
    state = int(np.argmin(final_cost))
    for t in range(num_frames - 1, -1, -1):
        path[t] = state
        state = int(backpointers[t, state])
    return path


# --------------------------------------------------------------------------
# Public API: compute-kaldi-pitch-feats
# --------------------------------------------------------------------------
def _compute_kaldi_pitch_1d(
    wave: np.ndarray,
    sample_rate: float,
    frame_length: float,
    frame_shift: float,
    min_f0: float,
    max_f0: float,
    soft_min_f0: float,
    penalty_factor: float,
    lowpass_cutoff: float,
    resample_frequency: float,
    delta_pitch: float,
    nccf_ballast: float,
    lowpass_filter_width: int,
    upsample_filter_width: int,
    recompute_frame: int,
    snip_edges: bool,
) -> np.ndarray:
    samp_rate_in, samp_rate_out = int(sample_rate), int(resample_frequency)
    window_size = int(resample_frequency * frame_length / 1000.0)
    window_shift = int(resample_frequency * frame_shift / 1000.0)
    first_lag, last_lag, lags, upsample = _lag_tables(
        float(resample_frequency),
        float(min_f0),
        float(max_f0),
        float(delta_pitch),
        int(upsample_filter_width),
    )
    full_length = window_size + last_lag

    # Kaldi's offline extractor accepts the whole waveform without flushing
    # the resampler, then calls InputFinished(), which flushes the last few
    # samples and "forces out" the final frames.  Frames of the first pass
    # use the signal energy of the unflushed part for their ballast term.
    resample_args = (samp_rate_in, samp_rate_out, float(lowpass_cutoff), int(lowpass_filter_width))
    num_unflushed = _resample_num_output(*resample_args, len(wave), flush=False)
    num_total = _resample_num_output(*resample_args, len(wave), flush=True)
    signal = _linear_resample(wave, *resample_args, num_total)

    frames_first = _frames_available(
        num_unflushed, window_size, window_shift, last_lag, False, snip_edges
    )
    num_frames = max(
        frames_first,
        _frames_available(num_total, window_size, window_shift, last_lag, True, snip_edges),
    )
    if num_frames == 0:
        return np.zeros((0, 2), dtype=_F32)

    def mean_square(n: int) -> float:
        part = signal[:n]
        return float(np.dot(part, part) / n - (part.sum() / n) ** 2)

    ms_first = mean_square(num_unflushed) if frames_first > 0 else 0.0
    ms_final = mean_square(num_total)
    frame_mean_square = np.full(num_frames, ms_final)
    frame_mean_square[:frames_first] = ms_first
    ballast = (frame_mean_square * window_size) ** 2 * nccf_ballast

    frame_index = np.arange(num_frames)
    if snip_edges:
        starts = frame_index * window_shift
    else:
        starts = ((frame_index + 0.5) * window_shift).astype(np.int64) - full_length // 2
    nccf_pitch, nccf_pov, avg_norm_prod = _nccf(
        signal, starts, window_size, first_lag, last_lag, ballast
    )
    resampled = np.concatenate([nccf_pitch, nccf_pov]) @ upsample
    nccf_pitch_lags, nccf_pov_lags = resampled[:num_frames], resampled[num_frames:]

    lags64 = lags.astype(np.float64)
    soft_min_lags = _F32(soft_min_f0) * lags

    def local_cost(nccf: np.ndarray) -> np.ndarray:
        # ComputeLocalCost, eq. (5) of the paper: 1 - nccf * (1 - soft_min_f0 * lag),
        # in single precision and in Kaldi's order of operations.
        nccf32 = nccf.astype(_F32)
        return (_F32(1.0) - nccf32) + soft_min_lags[None, :] * nccf32

    # Kaldi: pow(Log(1.0 + delta_pitch), 2.0) * penalty_factor, options in float.
    inter_frame_factor = float(
        np.log1p(float(_F32(delta_pitch))) ** 2 * float(_F32(penalty_factor))
    )
    costs = local_cost(nccf_pitch_lags)

    # RecomputeBacktraces(): for the first "recompute_frame" frames Kaldi
    # re-scales the ballasted NCCF once the final signal energy is known and
    # redoes their Viterbi.  Offline this only changes frames of the first
    # (unflushed) pass, and only if the energy moved by more than ~2%.
    recompute = 0 < frames_first < recompute_frame and not _approx_equal(ms_first, ms_final, 0.01)
    rescaled_costs = costs
    if recompute:
        old = (float(_F32(ms_first)) * window_size) ** 2 * nccf_ballast
        new = (float(_F32(ms_final)) * window_size) ** 2 * nccf_ballast
        scale = np.ones(num_frames)
        scale[:frames_first] = np.sqrt(
            (old + avg_norm_prod[:frames_first]) / (new + avg_norm_prod[:frames_first])
        )
        rescaled_costs = local_cost(nccf_pitch_lags * scale[:, None])

    path = _viterbi(rescaled_costs, inter_frame_factor)

    output = np.empty((num_frames, 2), dtype=_F32)
    output[:, 0] = nccf_pov_lags[frame_index, path]
    output[:, 1] = 1.0 / lags64[path]
    return output


def compute_kaldi_pitch(
    waveform: ArrayLike,
    sample_rate: float,
    *,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    min_f0: float = 50,
    max_f0: float = 400,
    soft_min_f0: float = 10.0,
    penalty_factor: float = 0.1,
    lowpass_cutoff: float = 1000,
    resample_frequency: float = 4000,
    delta_pitch: float = 0.005,
    nccf_ballast: float = 7000,
    lowpass_filter_width: int = 1,
    upsample_filter_width: int = 5,
    max_frames_latency: int = 0,
    frames_per_chunk: int = 0,
    simulate_first_pass_online: bool = False,
    recompute_frame: int = 500,
    snip_edges: bool = True,
) -> ArrayLike:
    """Extract Kaldi pitch features ``(nccf, pitch_hz)`` per frame.

    Drop-in replacement for torchaudio 2.0's
    ``torchaudio.functional.compute_kaldi_pitch`` and Kaldi's
    ``compute-kaldi-pitch-feats``; option names map to Kaldi's
    ``--frame-length``, ``--frame-shift``, ``--min-f0``, ``--max-f0``,
    ``--soft-min-f0``, ``--penalty-factor``, ``--lowpass-cutoff``,
    ``--resample-frequency``, ``--delta-pitch``, ``--nccf-ballast``,
    ``--lowpass-filter-width``, ``--upsample-filter-width``,
    ``--max-frames-latency``, ``--frames-per-chunk``,
    ``--simulate-first-pass-online``, ``--recompute-frame`` and
    ``--snip-edges``.

    The result does not depend on the overall scale of the waveform (the
    ballast term scales with the signal energy), so both int16-scale and
    [-1, 1] floats give the same pitch.

    Args:
        waveform: Tensor or array of shape ``(..., time)``.
        sample_rate: Sampling rate of ``waveform`` in Hz.
        max_frames_latency: Only affects online extraction; accepted and
            ignored offline (as in Kaldi).
        frames_per_chunk: Must be 0 (offline); chunked extraction is not
            implemented.
        simulate_first_pass_online: Must be False.
        recompute_frame: Kaldi's "recompute-frame"; it influences offline
            output for utterances shorter than this many frames.

    Returns:
        ``(..., frames, 2)`` float32 with ``[..., 0]`` the NCCF (for the
        probability of voicing) and ``[..., 1]`` the pitch in Hz; a torch
        tensor if ``waveform`` is one, otherwise a numpy array.
    """
    if frames_per_chunk != 0 or simulate_first_pass_online:
        raise NotImplementedError(
            "Only offline Kaldi pitch extraction is implemented: "
            "frames_per_chunk must be 0 and simulate_first_pass_online False "
            f"(got frames_per_chunk={frames_per_chunk}, "
            f"simulate_first_pass_online={simulate_first_pass_online})."
        )
    if max_frames_latency < 0:
        raise ValueError(f"max_frames_latency must be >= 0, got {max_frames_latency}")
    if not (lowpass_cutoff > 0 and 2 * lowpass_cutoff <= min(sample_rate, resample_frequency)):
        raise ValueError(
            "lowpass_cutoff must be positive and at most half of both sample_rate "
            f"and resample_frequency (got lowpass_cutoff={lowpass_cutoff}, "
            f"sample_rate={sample_rate}, resample_frequency={resample_frequency})."
        )
    if not 0 < min_f0 < max_f0:
        raise ValueError(f"Need 0 < min_f0 < max_f0, got min_f0={min_f0}, max_f0={max_f0}")
    if lowpass_filter_width <= 0 or upsample_filter_width <= 0:
        raise ValueError("lowpass_filter_width and upsample_filter_width must be > 0")

    is_tensor = isinstance(waveform, torch.Tensor)
    array = waveform.detach().cpu().double().numpy() if is_tensor else np.asarray(waveform)
    array = array.astype(np.float64, copy=False)
    if array.ndim == 0:
        raise ValueError("waveform must have a time dimension")
    batch_shape = array.shape[:-1]
    flat = array.reshape(-1, array.shape[-1])
    results = [
        _compute_kaldi_pitch_1d(
            row,
            sample_rate,
            frame_length,
            frame_shift,
            min_f0,
            max_f0,
            soft_min_f0,
            penalty_factor,
            lowpass_cutoff,
            resample_frequency,
            delta_pitch,
            nccf_ballast,
            lowpass_filter_width,
            upsample_filter_width,
            recompute_frame,
            snip_edges,
        )
        for row in flat
    ]
    if results:
        output = np.stack(results).reshape(batch_shape + results[0].shape)
    else:
        output = np.zeros(batch_shape + (0, 2), dtype=_F32)
    return torch.from_numpy(output) if is_tensor else output
