"""Kaldi-compatible 80-dim fbank + 3-dim pitch features without Kaldi.

Reproduces what Kaldi's ``steps/make_fbank_pitch.sh`` (as called by ESPnet's
``asr.sh --feats_type fbank_pitch``) writes per utterance::

    paste-feats --length-tolerance=2 \\
        "compute-fbank-feats --num-mel-bins=80 ..." \\
        "compute-kaldi-pitch-feats ... | process-kaldi-pitch-feats ..."

i.e. ``[log-mel fbank (80) | POV feature, normalised log pitch, delta pitch]``.
The filterbank is computed by ``kaldi-native-fbank`` (a C++ port of Kaldi's
``compute-fbank-feats``), the pitch by :mod:`espnet_gmot.features.pitch` and
:mod:`espnet_gmot.features.process_pitch`.

Like Kaldi, the features are computed on 16-bit integer scale samples: pass
``input_scale=32768`` for float waveforms in [-1, 1] (what soundfile and ESPnet
produce) so the log-energies match Kaldi's.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from espnet_gmot.features.pitch import compute_kaldi_pitch
from espnet_gmot.features.process_pitch import process_kaldi_pitch

__all__ = ["FbankPitchConfig", "compute_kaldi_fbank", "compute_fbank_pitch"]


@dataclass
class FbankPitchConfig:
    """Options of fbank+pitch extraction, named after Kaldi's options.

    Fbank options (``compute-fbank-feats``): ``num_mel_bins`` (Kaldi default
    23, ESPnet's ``conf/fbank.conf`` sets 80), ``frame_length`` /
    ``frame_shift`` in ms, ``dither`` (Kaldi's default is 1.0; the default
    here is 0.0 so features are deterministic), ``preemphasis_coefficient``,
    ``remove_dc_offset``, ``window_type``, ``round_to_power_of_two``,
    ``low_freq``, ``high_freq``, ``use_energy``, ``energy_floor``,
    ``raw_energy``, ``htk_compat``, ``use_log_fbank``, ``use_power``,
    ``snip_edges``.

    ``pitch_options`` are passed to
    :func:`~espnet_gmot.features.pitch.compute_kaldi_pitch`
    (``compute-kaldi-pitch-feats``) and ``process_options`` to
    :func:`~espnet_gmot.features.process_pitch.process_kaldi_pitch`
    (``process-kaldi-pitch-feats``; e.g. ``delta_pitch_noise_stddev=0`` for
    noise-free delta pitch, ``srand``).

    ``length_tolerance`` is ``paste-feats --length-tolerance`` (2 in
    ``make_fbank_pitch.sh``): fbank and pitch frame counts may differ by this
    much and are cut to the shorter one.
    """

    num_mel_bins: int = 80
    frame_length: float = 25.0
    frame_shift: float = 10.0
    dither: float = 0.0
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    use_energy: bool = False
    energy_floor: float = 0.0
    raw_energy: bool = True
    htk_compat: bool = False
    use_log_fbank: bool = True
    use_power: bool = True
    snip_edges: bool = True
    pitch_options: Dict[str, Any] = field(default_factory=dict)
    process_options: Dict[str, Any] = field(default_factory=dict)
    length_tolerance: int = 2

    @property
    def pitch_dim(self) -> int:
        keys = ("add_pov_feature", "add_normalized_log_pitch", "add_delta_pitch")
        dim = sum(bool(self.process_options.get(key, True)) for key in keys)
        return dim + bool(self.process_options.get("add_raw_log_pitch", False))

    @property
    def feature_dim(self) -> int:
        return self.num_mel_bins + int(self.use_energy) + self.pitch_dim

    def num_frames(self, num_samples: int, sample_rate: float) -> int:
        """Frames the fbank gives ``num_samples`` samples (Kaldi's ``NumFrames``)."""
        window = int(sample_rate * 0.001 * self.frame_length)
        shift = int(sample_rate * 0.001 * self.frame_shift)
        if self.snip_edges:
            return 0 if num_samples < window else 1 + (num_samples - window) // shift
        return (num_samples + shift // 2) // shift


def compute_kaldi_fbank(
    waveform: np.ndarray, sample_rate: float, config: Optional[FbankPitchConfig] = None
) -> np.ndarray:
    """Log mel filterbank exactly like Kaldi's ``compute-fbank-feats``.

    Args:
        waveform: 1-D samples on Kaldi's scale (16-bit integer values).
        sample_rate: ``--sample-frequency`` in Hz.
        config: Options; defaults to :class:`FbankPitchConfig()`.

    Returns:
        ``(frames, num_mel_bins [+1 if use_energy])`` float32.
    """
    import kaldi_native_fbank as knf  # imported lazily: optional for pitch-only use

    config = config or FbankPitchConfig()
    opts = knf.FbankOptions()
    frame = opts.frame_opts
    frame.samp_freq = float(sample_rate)
    frame.frame_length_ms = float(config.frame_length)
    frame.frame_shift_ms = float(config.frame_shift)
    frame.dither = float(config.dither)
    frame.preemph_coeff = float(config.preemphasis_coefficient)
    frame.remove_dc_offset = bool(config.remove_dc_offset)
    frame.window_type = str(config.window_type)
    frame.round_to_power_of_two = bool(config.round_to_power_of_two)
    frame.snip_edges = bool(config.snip_edges)
    opts.mel_opts.num_bins = int(config.num_mel_bins)
    opts.mel_opts.low_freq = float(config.low_freq)
    opts.mel_opts.high_freq = float(config.high_freq)
    opts.use_energy = bool(config.use_energy)
    opts.energy_floor = float(config.energy_floor)
    opts.raw_energy = bool(config.raw_energy)
    opts.htk_compat = bool(config.htk_compat)
    opts.use_log_fbank = bool(config.use_log_fbank)
    opts.use_power = bool(config.use_power)

    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(float(sample_rate), np.ascontiguousarray(waveform, dtype=np.float32))
    extractor.input_finished()
    num_frames = extractor.num_frames_ready
    dim = config.num_mel_bins + int(config.use_energy)
    features = np.empty((num_frames, dim), dtype=np.float32)
    for index in range(num_frames):
        features[index] = extractor.get_frame(index)
    return features


def compute_fbank_pitch(
    waveform: np.ndarray,
    sample_rate: float,
    config: Optional[FbankPitchConfig] = None,
    *,
    input_scale: float = 1.0,
) -> np.ndarray:
    """Fbank + Kaldi pitch features, concatenated like Kaldi's ``paste-feats``.

    Args:
        waveform: 1-D waveform.
        sample_rate: Sampling rate in Hz.
        config: Options; defaults to :class:`FbankPitchConfig()` (80 mel
            bins + POV, normalised log pitch and delta pitch = 83 dims).
        input_scale: Factor applied to ``waveform`` before extraction; use
            32768 for floats in [-1, 1] so the result equals Kaldi's on the
            16-bit samples.

    Returns:
        ``(frames, config.feature_dim)`` float32, fbank first, pitch last.

    Raises:
        ValueError: If the waveform is not 1-D, or fbank and pitch frame
            counts differ by more than ``config.length_tolerance``.
    """
    config = config or FbankPitchConfig()
    samples = np.asarray(waveform, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"Expected a 1-D waveform, got shape {samples.shape}")
    samples = samples * input_scale
    fbank = compute_kaldi_fbank(samples, sample_rate, config)

    pitch_options = dict(config.pitch_options)
    pitch_options.setdefault("frame_length", config.frame_length)
    pitch_options.setdefault("frame_shift", config.frame_shift)
    pitch_options.setdefault("snip_edges", config.snip_edges)
    raw_pitch = compute_kaldi_pitch(samples, sample_rate, **pitch_options)
    if len(raw_pitch) > 0:
        pitch = process_kaldi_pitch(raw_pitch, **config.process_options)
    else:
        pitch = np.zeros((0, config.pitch_dim), dtype=np.float32)

    if abs(len(fbank) - len(pitch)) > config.length_tolerance:
        raise ValueError(
            f"fbank has {len(fbank)} frames but pitch has {len(pitch)}; they differ by "
            f"more than length_tolerance={config.length_tolerance} (check that frame "
            "options and snip_edges agree)."
        )
    num_frames = min(len(fbank), len(pitch))
    return np.concatenate([fbank[:num_frames], pitch[:num_frames]], axis=1)
