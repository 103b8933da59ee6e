"""process_kaldi_pitch against Kaldi's formulas (hand-computed) and ProcessPitch."""

import math

import numpy as np
import pytest

from espnet_gmot.features import FbankPitchConfig, compute_fbank_pitch
from espnet_gmot.features import process_pitch as process_pitch_module
from espnet_gmot.features.process_pitch import glibc_rand_gauss, process_kaldi_pitch
from tests.features.conftest import SIGNALS


def no_noise(**kwargs):
    return {"delta_pitch_noise_stddev": 0.0, **kwargs}


def test_pov_feature_formula():
    # pov = 2 * ((1.0001 - n)**0.15 - 1); n is clipped to [-1, 1].
    pitch = np.array([[0.5, 100.0], [1.2, 100.0], [-3.0, 100.0]], dtype=np.float32)
    pov = process_kaldi_pitch(pitch, **no_noise())[:, 0]
    expected = [
        2 * (0.5001**0.15 - 1),
        2 * (0.0001**0.15 - 1),
        2 * (2.0001**0.15 - 1),
    ]
    np.testing.assert_allclose(pov, expected, rtol=1e-6)
    shifted = process_kaldi_pitch(pitch, pov_scale=1.0, pov_offset=0.5, **no_noise())[:, 0]
    np.testing.assert_allclose(shifted, np.array(expected) / 2 + 0.5, rtol=1e-6)


def test_normalized_log_pitch_equal_weights():
    # Equal NCCF -> equal POV weights; with a +-1 frame window the mean of
    # log(100), log(200), log(400) is taken over the available neighbours.
    pitch = np.array([[0.9, 100.0], [0.9, 200.0], [0.9, 400.0]], dtype=np.float32)
    out = process_kaldi_pitch(
        pitch, normalization_left_context=1, normalization_right_context=1, **no_noise()
    )
    log2 = math.log(2.0)
    # frame 0: 2 * (log100 - (log100 + log200) / 2) = -log 2; frame 1: 0; frame 2: +log 2.
    np.testing.assert_allclose(out[:, 1], [-log2, 0.0, log2], atol=1e-6)


def test_normalized_log_pitch_is_pov_weighted():
    # POV weights from Kaldi's NccfToPov: p = 1 / (1 + exp(-r)).
    def pov(n):
        r = (
            -5.2
            + 5.4 * math.exp(7.5 * (n - 1))
            + 4.8 * n
            - 2 * math.exp(-10 * n)
            + 4.2 * math.exp(20 * (n - 1))
        )
        return 1 / (1 + math.exp(-r))

    pitch = np.array([[0.95, 100.0], [0.1, 300.0]], dtype=np.float32)
    out = process_kaldi_pitch(pitch, **no_noise())
    w0, w1 = pov(float(pitch[0, 0])), pov(float(pitch[1, 0]))
    mean = (w0 * math.log(100) + w1 * math.log(300)) / (w0 + w1)
    np.testing.assert_allclose(
        out[:, 1], [2 * (math.log(100) - mean), 2 * (math.log(300) - mean)], rtol=1e-5
    )


def test_delta_pitch_formula_with_edge_replication():
    # log pitch rises by log 2 per frame; window 2 gives weights [-2,-1,0,1,2]/10.
    pitch = np.stack([np.full(6, 0.9), 100.0 * 2.0 ** np.arange(6)], axis=1)
    delta = process_kaldi_pitch(pitch.astype(np.float32), **no_noise())[:, 2]
    log2 = math.log(2.0)
    # Edge frames replicate the first/last value: frame 0 sees [0,0,0,1,2]*log2.
    expected = 10 * log2 * np.array([0.5, 0.8, 1.0, 1.0, 0.8, 0.5])
    np.testing.assert_allclose(delta, expected, rtol=1e-5)


def test_glibc_rand_matches_known_values():
    # glibc: srand(1) (and srand(0)) then rand() -> 1804289383, 846930886, ...
    np.testing.assert_array_equal(
        process_pitch_module._glibc_rand(0, 3), [1804289383, 846930886, 1681692777]
    )
    # Kaldi's RandGauss() after srand(0), printed by a C++ build.
    np.testing.assert_allclose(
        glibc_rand_gauss(0, 3), [-0.46489266, 0.20956026, 0.13919231], atol=1e-6
    )


def test_delta_pitch_noise_is_kaldis_srand_stream():
    pitch = np.stack([np.full(5, 0.9), np.full(5, 150.0)], axis=1).astype(np.float32)
    noisy = process_kaldi_pitch(pitch)[:, 2]
    # Constant pitch -> zero delta; what is left is 10 * 0.005 * RandGauss().
    np.testing.assert_allclose(noisy, 0.05 * glibc_rand_gauss(0, 5), atol=1e-7)
    # glibc treats srand(0) like srand(1); 2 is a different stream.
    np.testing.assert_array_equal(process_kaldi_pitch(pitch, srand=1)[:, 2], noisy)
    other_seed = process_kaldi_pitch(pitch, srand=2)[:, 2]
    assert not np.allclose(noisy, other_seed)


def test_former_srand_seed_option_still_works_with_a_warning():
    pitch = np.stack([np.full(5, 0.9), np.full(5, 150.0)], axis=1).astype(np.float32)
    with pytest.warns(FutureWarning, match="'srand_seed' is deprecated.*use 'srand'"):
        renamed = process_kaldi_pitch(pitch, srand_seed=2)
    np.testing.assert_array_equal(renamed, process_kaldi_pitch(pitch, srand=2))
    # Through the fbank+pitch config too, where recipes set it.
    samples = np.sin(np.arange(8000) * 2 * np.pi * 150 / 16000) * 1000
    with pytest.warns(FutureWarning, match="srand_seed"):
        old = compute_fbank_pitch(samples, 16000, FbankPitchConfig(process_options={"srand_seed": 2}))
    new = compute_fbank_pitch(samples, 16000, FbankPitchConfig(process_options={"srand": 2}))
    np.testing.assert_array_equal(old, new)
    assert not np.array_equal(new, compute_fbank_pitch(samples, 16000))
    with pytest.raises(TypeError, match="srand_sed"):
        process_kaldi_pitch(pitch, srand_sed=2)


def test_feature_selection_and_delay():
    pitch = np.array([[0.9, 100.0], [0.8, 120.0], [0.7, 140.0]], dtype=np.float32)
    base = process_kaldi_pitch(pitch, **no_noise())
    assert base.shape == (3, 3)
    raw = process_kaldi_pitch(
        pitch,
        add_pov_feature=False,
        add_normalized_log_pitch=False,
        add_delta_pitch=False,
        add_raw_log_pitch=True,
        **no_noise(),
    )
    np.testing.assert_allclose(raw[:, 0], np.log(pitch[:, 1]), rtol=1e-6)
    delayed = process_kaldi_pitch(pitch, delay=2, **no_noise())
    np.testing.assert_array_equal(delayed, base[[0, 0, 0, 1, 2]])
    with pytest.raises(ValueError, match="At least one"):
        process_kaldi_pitch(
            pitch, add_pov_feature=False, add_normalized_log_pitch=False, add_delta_pitch=False
        )


@pytest.mark.parametrize("name", SIGNALS)
def test_matches_kaldi_process_pitch(name, kaldi_reference):
    # Kaldi's ProcessPitch with srand(0), fed Kaldi's raw pitch.
    ours = process_kaldi_pitch(kaldi_reference[name])
    np.testing.assert_allclose(ours, kaldi_reference[f"{name}_processed"], atol=1e-5)
