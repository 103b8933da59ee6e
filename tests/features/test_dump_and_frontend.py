"""dump_fbank_pitch (ESPnet dump layout) and FbankPitchFrontend."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from typeguard import TypeCheckError

from espnet_gmot import atomic, kaldi_data
from espnet_gmot.bin import dump_fbank_pitch as dump
from espnet_gmot.espnet.frontend import FbankPitchFrontend
from espnet_gmot.features import FbankPitchConfig, compute_fbank_pitch
from tests.features.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]

UTTERANCES = {"utt_a": "mandarin1", "utt_b": "mandarin2", "utt_c": "short_tone"}


def make_data_dir(root: Path, utterances=UTTERANCES) -> Path:
    data = root / "data" / "train"
    data.mkdir(parents=True)
    kaldi_data.write_kaldi_map(data / "wav.scp", {u: FIXTURES / f"{n}.wav" for u, n in utterances.items()})
    kaldi_data.write_kaldi_map(data / "text", {u: f"{n} words" for u, n in utterances.items()})
    utt2spk = {utt: "spk1" for utt in utterances}
    kaldi_data.write_kaldi_map(data / "utt2spk", utt2spk)
    kaldi_data.write_kaldi_map(data / "spk2utt", kaldi_data.utt2spk_to_spk2utt(utt2spk))
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
    shapes = kaldi_data.read_kaldi_map(output / "feats_shape")
    frames = kaldi_data.read_kaldi_map(output / "utt2num_frames")
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


def test_frontend_srand_seeds_the_delta_pitch_noise():
    # srand is process-kaldi-pitch-feats --srand: it reaches the pitch options
    # without a deprecation warning and changes only the delta pitch (column 82).
    wave = soundfile.read(FIXTURES / "mandarin1.wav", dtype="float32")[0]
    batch, lengths = torch.from_numpy(wave)[None], torch.tensor([len(wave)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seeded = FbankPitchFrontend(srand=2)(batch, lengths)[0][0].numpy()
    config = FbankPitchConfig(process_options={"srand": 2})
    np.testing.assert_array_equal(seeded, compute_fbank_pitch(wave, 16000, config, input_scale=32768.0))
    default = FbankPitchFrontend()(batch, lengths)[0][0].numpy()
    changed = np.any(seeded != default, axis=0)
    assert changed[82] and not changed[:82].any()


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
    with pytest.raises(kaldi_data.DataDirError, match="--resample true"):
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
    with pytest.raises(kaldi_data.DataDirError, match=expected):
        dump.dump_fbank_pitch(data, tmp_path / "o", 1, 8000, False, -1, FbankPitchConfig(), None)


def test_missing_data_dir(tmp_path):
    with pytest.raises(kaldi_data.DataDirError, match="not found"):
        dump.dump_fbank_pitch(
            tmp_path / "nothing", tmp_path / "o", 1, 16000, False, -1, FbankPitchConfig(), None
        )


def _silence(path: Path, num_samples: int) -> Path:
    soundfile.write(path, np.zeros(num_samples, dtype=np.int16), 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("num_samples", [0, 1, 399])
def test_too_short_audio_is_skipped_by_name_before_extraction(tmp_path, caplog, num_samples):
    """Less than one 25 ms frame (400 samples): skipped with a warning, like Kaldi."""
    data = make_data_dir(tmp_path, {"utt_a": "mandarin1", "utt_b": "mandarin2"})
    empty = _silence(tmp_path / "empty.wav", num_samples)
    (data / "wav.scp").write_text(
        f"utt_a {FIXTURES / 'mandarin1.wav'}\nutt_b {FIXTURES / 'mandarin2.wav'}\nutt_z {empty}\n")
    (data / "text").write_text("utt_a a\nutt_b b\nutt_z z\n")
    (data / "utt2spk").write_text("utt_a spk1\nutt_b spk1\nutt_z spk1\n")
    output = tmp_path / "out"
    run_dump(data, output)  # one job: the warning is logged in this process
    assert "utt_z" in caplog.text and str(empty) in caplog.text and "skipping" in caplog.text
    assert sorted(kaldiio.load_scp(str(output / "feats.scp"))) == ["utt_a", "utt_b"]
    assert "utt_z" not in (output / "text").read_text()
    assert "utt_z" not in (output / "spk2utt").read_text()


def test_only_empty_audio_names_the_data_dir(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    empty = _silence(tmp_path / "empty.wav", 0)
    (data / "wav.scp").write_text(f"utt_z {empty}\n")
    with pytest.raises(SystemExit):
        run_dump(data, tmp_path / "out")
    assert "utt_z" in caplog.text and str(empty) in caplog.text
    assert f"No utterance of {data}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty.wav"]


def test_extraction_error_names_utterance_and_file(tmp_path, monkeypatch):
    data = make_data_dir(tmp_path, {"utt_a": "mandarin1"})

    def broken(*args, **kwargs):
        raise ValueError("something inside the pitch tracker")

    monkeypatch.setattr(dump, "compute_fbank_pitch", broken)
    with pytest.raises(kaldi_data.DataDirError, match=r"'utt_a' \(.*mandarin1.wav.*pitch tracker"):
        dump.dump_fbank_pitch(data, tmp_path / "o", 1, 16000, False, -1, FbankPitchConfig(), None)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("failing_write", ["ark", "feats.scp"])
def test_full_disk_names_the_output_keeps_the_old_one_and_a_rerun_completes(
        tmp_path, caplog, monkeypatch, failing_write):
    """ENOSPC while the features or the maps are written (one job, in this
    process, so that the injected failure reaches it)."""
    data = make_data_dir(tmp_path)
    output = tmp_path / "out"
    run_dump(data, output)
    before = snapshot_files(output)
    (data / "text").write_text("utt_a changed\nutt_b mandarin2 words\nutt_c short_tone words\n")

    def full(path):
        return OSError(errno.ENOSPC, "No space left on device", str(path))

    if failing_write == "ark":
        real_save_ark = kaldiio.save_ark
        written = []

        def save_ark(ark, *args, **kwargs):
            if written:  # the second utterance finds the disk full
                raise full(ark.name)
            written.append(ark.name)
            return real_save_ark(ark, *args, **kwargs)

        monkeypatch.setattr(kaldiio, "save_ark", save_ark)
    else:
        class HalfThenFull:
            """The map's temporary file: half of the text fits, then the disk is full."""

            def __init__(self, file):
                self.file = file

            def write(self, text):
                self.file.write(text[: len(text) // 2])
                self.file.flush()
                raise full(self.file.name)

            def __getattr__(self, name):
                return getattr(self.file, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.file.close()

        def filling_open(file, *args, **kwargs):
            opened = open(file, *args, **kwargs)
            return HalfThenFull(opened) if Path(file).name.startswith(".feats.scp.tmp") else opened

        monkeypatch.setattr(atomic, "open", filling_open, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_dump(data, output, "--nj", "1")
    assert exit_info.value.code == 1
    assert f"No space left on the device of {output}" in caplog.text
    assert "MiB free there now" in caplog.text and "run the same command again" in caplog.text
    assert snapshot_files(output) == before  # the previous output, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]  # no staging left

    monkeypatch.undo()
    run_dump(data, output, "--nj", "1")
    run_dump(data, tmp_path / "whole", "--nj", "1")
    rerun = dict(kaldiio.load_scp(str(output / "feats.scp")))
    whole = dict(kaldiio.load_scp(str(tmp_path / "whole" / "feats.scp")))
    assert sorted(rerun) == sorted(whole) == sorted(UTTERANCES)
    for utt in UTTERANCES:
        np.testing.assert_array_equal(rerun[utt], whole[utt])
    assert (output / "text").read_text().startswith("utt_a changed")


def snapshot_files(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_output_has_the_permissions_of_a_plain_directory(tmp_path):
    data = make_data_dir(tmp_path, {"utt_a": "mandarin1"})
    old = os.umask(0o027)
    try:
        run_dump(data, tmp_path / "out")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = (tmp_path / "out").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o750


def _killed_staging(output: Path, kind: str) -> Path:
    """What a run killed with SIGKILL leaves: a staging dir of a dead process."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    staging = output.parent / f".{output.name}.{kind}-{proc.stdout.strip()}-abc123"
    (staging / "data").mkdir(parents=True)
    (staging / "feats_type").write_text("fbank_pitch\n")
    return staging


def test_staging_left_by_a_killed_run_is_removed(tmp_path):
    data = make_data_dir(tmp_path, {"utt_a": "mandarin1"})
    output = tmp_path / "dump" / "train"
    output.parent.mkdir()
    stale = _killed_staging(output, "tmp")
    legacy = output.parent / f".{output.name}.tmp-k3j_x9q"  # name used by earlier versions
    legacy.mkdir()
    other = output.parent / ".dev.tmp-1-abc"  # another output's: not ours to touch
    other.mkdir()
    live = output.parent / f".{output.name}.tmp-{os.getppid()}-abc"  # a live writer
    live.mkdir()
    run_dump(data, output)
    assert sorted(p.name for p in output.parent.iterdir()) == sorted(
        [".dev.tmp-1-abc", live.name, "train"])
    assert not stale.exists() and not legacy.exists()
    assert sorted(kaldiio.load_scp(str(output / "feats.scp"))) == ["utt_a"]


def test_output_replaced_by_a_killed_run_is_restored_first(tmp_path):
    """Killed between moving the old output aside and moving the new one in."""
    data = make_data_dir(tmp_path, {"utt_a": "mandarin1"})
    output = tmp_path / "dump" / "train"
    run_dump(data, output)
    backup = _killed_staging(output, "old")
    shutil.rmtree(backup)
    output.rename(backup)
    kaldi_data.clean_stale_staging(output)
    assert sorted(kaldiio.load_scp(str(output / "feats.scp"))) == ["utt_a"]
    assert sorted(p.name for p in output.parent.iterdir()) == ["train"]


@pytest.mark.slow  # runs the command in a subprocess on 40 utterances
def test_sigkill_during_dump_then_rerun(tmp_path):
    data = make_data_dir(tmp_path, {f"utt_{k}": "mandarin3" for k in range(40)})
    output = tmp_path / "dump" / "train"
    proc = subprocess.Popen([sys.executable, "-m", "espnet_gmot.bin.dump_fbank_pitch",
                             str(data), str(output)], cwd=REPO)
    deadline = time.monotonic() + 120
    while not list(output.parent.glob(".train.tmp-*/data/*.ark")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(output.parent.glob(".train.tmp-*")), "the run finished before it was killed"
    assert not output.exists()
    run_dump(data, output)
    assert sorted(p.name for p in output.parent.iterdir()) == ["train"]
    assert len(kaldiio.load_scp(str(output / "feats.scp"))) == 40
