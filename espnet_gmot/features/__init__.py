"""Kaldi-compatible acoustic features (fbank + pitch) computed without Kaldi."""

from espnet_gmot.features.fbank import (
    FbankPitchConfig,
    compute_fbank_pitch,
    compute_kaldi_fbank,
)
from espnet_gmot.features.pitch import compute_kaldi_pitch
from espnet_gmot.features.process_pitch import process_kaldi_pitch

__all__ = [
    "FbankPitchConfig",
    "compute_fbank_pitch",
    "compute_kaldi_fbank",
    "compute_kaldi_pitch",
    "process_kaldi_pitch",
]
