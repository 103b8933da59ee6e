"""Shared fixtures of the fbank+pitch tests (see fixtures/README.md)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SIGNALS = (
    "tone120",
    "tone220_noise",
    "chirp",
    "short_tone",
    "end_click",
    "mandarin1",
    "mandarin2",
    "mandarin3",
)


def read_int16(name: str):
    """Fixture waveform as float64 on 16-bit integer scale, and its rate."""
    samples, rate = soundfile.read(FIXTURES / f"{name}.wav", dtype="int16")
    return samples.astype(np.float64), rate


@pytest.fixture(scope="session")
def kaldi_reference():
    return dict(np.load(FIXTURES / "reference_kaldi.npz"))


@pytest.fixture(scope="session")
def torchaudio_reference():
    return dict(np.load(FIXTURES / "reference_torchaudio20.npz"))
