"""Fbank (kaldi-native-fbank) and the combined 83-dim fbank+pitch features."""

import numpy as np
import pytest
import torch
import torchaudio

from espnet_gmot.features import FbankPitchConfig, compute_fbank_pitch, compute_kaldi_fbank
from espnet_gmot.features.pitch import compute_kaldi_pitch
from espnet_gmot.features.process_pitch import process_kaldi_pitch
from tests.features.conftest import read_int16


@pytest.mark.parametrize("name", ["mandarin1", "chirp"])
def test_fbank_matches_torchaudio_compliance_kaldi(name):
    samples, rate = read_int16(name)
    ours = compute_kaldi_fbank(samples, rate)
    reference = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(samples).float()[None],
        num_mel_bins=80,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=rate,
    ).numpy()
    assert ours.shape == reference.shape == (1 + (len(samples) - 400) // 160, 80)
    # Both are Kaldi's algorithm in float32; FFT rounding differs slightly in
    # the log of the weakest bins.
    difference = np.abs(ours - reference)
    assert difference.max() < 1e-2 and difference.mean() < 1e-4


def test_fbank_pitch_layout_and_scaling():
    samples, rate = read_int16("mandarin2")
    config = FbankPitchConfig()
    assert config.feature_dim == 83
    features = compute_fbank_pitch(samples, rate, config)
    fbank = compute_kaldi_fbank(samples, rate, config)
    pitch = process_kaldi_pitch(compute_kaldi_pitch(samples, rate))
    assert features.shape == (len(fbank), 83) == (len(pitch), 83)
    np.testing.assert_array_equal(features[:, :80], fbank)
    np.testing.assert_array_equal(features[:, 80:], pitch)
    # Floats in [-1, 1] with input_scale=32768 are Kaldi's int16 samples.
    from_float = compute_fbank_pitch(samples / 32768.0, rate, config, input_scale=32768.0)
    np.testing.assert_allclose(from_float, features, atol=1e-4)


def test_frame_counts_agree_for_all_lengths():
    rng = np.random.default_rng(0)
    for num_samples in range(400, 400 + 160 * 4, 37):
        features = compute_fbank_pitch(rng.standard_normal(num_samples) * 1000, 16000)
        assert len(features) == 1 + (num_samples - 400) // 160


def test_mismatched_frame_options_are_rejected():
    samples, rate = read_int16("mandarin1")
    config = FbankPitchConfig(pitch_options={"frame_shift": 5.0})
    with pytest.raises(ValueError, match="length_tolerance"):
        compute_fbank_pitch(samples, rate, config)
