"""dump_fbank_pitch (ESPnet dump layout) and FbankPitchFrontend."""

from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from typeguard import TypeCheckError

from espnet_gmot.bin import dump_fbank_pitch as dump
from espnet_gmot.espnet.frontend import FbankPitchFrontend
from espnet_gmot.features import FbankPitchConfig, compute_fbank_pitch
from tests.features.conftest import FIXTURES

UTTERANCES = {"utt_a": "mandarin1", "utt_b": "mandarin2", "utt_c": "short_tone"}


def make_data_dir(root: Path, utterances=UTTERANCES) -> Path:
    data = root / "data" / "train"
    data.mkdir(parents=True)
    with (
        (data / "wav.scp").open("w") as wav_scp,
        (data / "text").open("w") as text,
        (data / "utt2spk").open("w") as utt2spk,
    ):
        for utt, name in utterances.items():
            wav_scp.write(f"{utt} {FIXTURES / (name + '.wav')}\n")
            text.write(f"{utt} {name} words\n")
            utt2spk.write(f"{utt} spk1\n")
    (data / "spk2utt").write_text("spk1 " + " ".join(utterances) + "\n")
    return data


def run_dump(data: Path, output: Path, *extra: str) -> None:
    dump.main([str(data), str(output), "--log_level", "WARNING", *extra])


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    root = tmp_path_factory.mktemp("dump")
    data = make_data_dir(root)
    output = root / "dump" / "fbank_pitch" / "train"
    run_dump(data, output, "--nj", "2")
    return data, output


def test_dump_layout(dumped):
    data, output = dumped
    for name in ("text", "utt2spk", "spk2utt", "wav.scp"):
        assert (output / name).read_text() == (data / name).read_text()
    assert (output / "feats_type").read_text() == "fbank_pitch\n"
    assert (output / "feats_dim").read_text() == "83\n"
    feats = kaldiio.load_scp(str(output / "feats.scp"))
    assert sorted(feats) == sorted(UTTERANCES)
    shapes = dict(line.split() for line in (output / "feats_shape").read_text().splitlines())
    frames = dict(line.split() for line in (output / "utt2num_frames").read_text().splitlines())
    for utt, matrix in feats.items():
        assert matrix.shape[1] == 83 and matrix.dtype == np.float32
        assert shapes[utt] == f"{len(matrix)},83"
        assert frames[utt] == str(len(matrix))
    # Two jobs -> two arks, as make_fbank_pitch.sh --nj 2 writes.
    assert sorted(p.name for p in (output / "data").glob("*.ark")) == [
        "raw_fbank_pitch_train.1.ark",
        "raw_fbank_pitch_train.2.ark",
    ]
    assert not list(output.parent.glob(".train.*")), "temporary directories left behind"


def test_dump_values_equal_library(dumped):
    _, output = dumped
    feats = kaldiio.load_scp(str(output / "feats.scp"))
    for utt, name in UTTERANCES.items():
        samples, rate = soundfile.read(FIXTURES / f"{name}.wav", dtype="int16")
        expected = compute_fbank_pitch(samples.astype(np.float64), rate, FbankPitchConfig())
        np.testing.assert_array_equal(feats[utt], expected)


def test_frontend_equals_dump(dumped):
    _, output = dumped
    feats = kaldiio.load_scp(str(output / "feats.scp"))
    frontend = FbankPitchFrontend(fs=16000)
    assert frontend.output_size() == 83
    # ESPnet feeds float waveforms in [-1, 1] (soundfile's default scale).
    waves = [soundfile.read(FIXTURES / f"{name}.wav")[0] for name in UTTERANCES.values()]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for index, wave in enumerate(waves):
        batch[index, : len(wave)] = torch.from_numpy(wave)
    output_feats, output_lengths = frontend(batch, lengths)
    assert output_feats.shape == (3, max(len(m) for m in feats.values()), 83)
    for index, utt in enumerate(UTTERANCES):
        expected = feats[utt]
        assert int(output_lengths[index]) == len(expected)
        np.testing.assert_array_equal(output_feats[index, : len(expected)].numpy(), expected)
        assert torch.all(output_feats[index, len(expected) :] == 0)


def test_frontend_is_typechecked():
    with pytest.raises(TypeCheckError):
        FbankPitchFrontend(num_mel_bins="80")
    assert FbankPitchFrontend(fs="16k").fs == 16000


def test_segments(tmp_path):
    data = make_data_dir(tmp_path, {"rec1": "mandarin3"})
    (data / "segments").write_text("seg1 rec1 0.10 1.20\nseg2 rec1 1.00 2.50\n")
    (data / "text").write_text("seg1 a\nseg2 b\n")
    (data / "utt2spk").write_text("seg1 spk1\nseg2 spk1\n")
    (data / "spk2utt").write_text("spk1 seg1 seg2\n")
    output = tmp_path / "out"
    run_dump(data, output)
    feats = kaldiio.load_scp(str(output / "feats.scp"))
    samples, rate = soundfile.read(FIXTURES / "mandarin3.wav", dtype="int16")
    expected = compute_fbank_pitch(samples[1600:19200].astype(np.float64), rate)
    np.testing.assert_array_equal(feats["seg1"], expected)
    # seg2 ends past the file (2.17 s) by < 0.5 s: truncated like extract-segments.
    expected2 = compute_fbank_pitch(samples[16000:].astype(np.float64), rate)
    np.testing.assert_array_equal(feats["seg2"], expected2)


def test_resample(tmp_path):
    samples, rate = soundfile.read(FIXTURES / "mandarin1.wav", dtype="int16")
    wav8k = tmp_path / "eight.wav"
    soundfile.write(wav8k, samples[::2], 8000, subtype="PCM_16")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {wav8k}\n")
    with pytest.raises(dump.DataDirError, match="--resample true"):
        dump.dump_fbank_pitch(data, tmp_path / "a", 1, 16000, False, -1, FbankPitchConfig(), None)
    count = dump.dump_fbank_pitch(
        data, tmp_path / "b", 1, 16000, True, -1, FbankPitchConfig(), None
    )
    assert count == 1
    assert kaldiio.load_scp(str(tmp_path / "b" / "feats.scp"))["u1"].shape[1] == 83


@pytest.mark.parametrize(
    "wav_scp, message",
    [
        ("utt_a {missing}\n", "audio file for 'utt_a' not found"),
        ("utt_a sox in.wav -t wav - |\n", "pipe command"),
        ("", "is empty"),
    ],
)
def test_bad_input_is_explained_and_keeps_old_output(tmp_path, caplog, wav_scp, message):
    data = make_data_dir(tmp_path)
    output = tmp_path / "out"
    run_dump(data, output)
    before = (output / "feats.scp").read_text()
    (data / "wav.scp").write_text(wav_scp.format(missing=tmp_path / "nope.wav"))
    with pytest.raises(SystemExit) as exit_info:
        run_dump(data, output, "--nj", "2")
    assert exit_info.value.code == 1
    assert message in caplog.text
    assert (output / "feats.scp").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]


def test_wrong_sample_rate_names_file(tmp_path):
    data = make_data_dir(tmp_path, {"utt_a": "mandarin1"})
    expected = r"'utt_a'.*mandarin1.wav.*16000 Hz but --fs is 8000"
    with pytest.raises(dump.DataDirError, match=expected):
        dump.dump_fbank_pitch(data, tmp_path / "o", 1, 8000, False, -1, FbankPitchConfig(), None)


def test_missing_data_dir(tmp_path):
    with pytest.raises(dump.DataDirError, match="not found"):
        dump.dump_fbank_pitch(
            tmp_path / "nothing", tmp_path / "o", 1, 16000, False, -1, FbankPitchConfig(), None
        )
