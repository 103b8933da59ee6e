"""espnet_gmot.kaldi_data: the one reader/writer of Kaldi data-directory files."""

import os

import numpy as np
import pytest
import soundfile

from espnet_gmot.kaldi_data import (
    DataDirError,
    Utterance,
    filter_utterance_files,
    list_utterances,
    read_audio,
    read_kaldi_map,
    read_text,
    split_evenly,
    staged_directory,
    utt2spk_to_spk2utt,
    write_kaldi_map,
)


def test_map_keeps_order_and_inner_spaces(tmp_path):
    path = tmp_path / "text"
    path.write_text("b2 你好 世界  \n\na1\t他是 老师\n", encoding="utf-8")
    assert list(read_kaldi_map(path).items()) == [("b2", "你好 世界"), ("a1", "他是 老师")]


def test_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("u1 s1\nu2 s1\nu1 s2\n")
    with pytest.raises(DataDirError, match=rf"{path}:3: duplicate key 'u1' \(first on line 1\)"):
        read_kaldi_map(path)
    path.write_text("u1 s1\nu2\n")
    with pytest.raises(DataDirError, match=rf"{path}:2: expected '<key> <value>', got 'u2'"):
        read_kaldi_map(path)


def test_text_allows_empty_transcripts(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 \nu2\nu3 好\n", encoding="utf-8")
    assert read_text(path) == {"u1": "", "u2": "", "u3": "好"}


def test_write_round_trip_and_spk2utt(tmp_path):
    utt2spk = {"s1-u2": "s1", "s2-u1": "s2", "s1-u3": "s1"}
    write_kaldi_map(tmp_path / "utt2spk", utt2spk)
    assert read_kaldi_map(tmp_path / "utt2spk") == utt2spk
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    assert spk2utt == {"s1": ["s1-u2", "s1-u3"], "s2": ["s2-u1"]}
    write_kaldi_map(tmp_path / "spk2utt", spk2utt)
    assert (tmp_path / "spk2utt").read_text() == "s1 s1-u2 s1-u3\ns2 s2-u1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spk2utt", "utt2spk"]


def test_split_evenly_is_contiguous_like_split_scp():
    chunks = split_evenly(list(range(10)), 3)
    assert [list(c) for c in chunks] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert len(split_evenly([1, 2], 8)) == 2


def _wav(path, seconds, rate=16000):
    soundfile.write(path, np.full(int(seconds * rate), 0.25), rate, subtype="PCM_16")
    return path


def test_segments_are_cut_like_extract_segments(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    wav = _wav(tmp_path / "rec.wav", 2.0)
    (data / "wav.scp").write_text(f"rec {wav}\n")
    (data / "segments").write_text(
        "a rec 0.5 1.0\nb rec 1.8 2.3\nc rec 1.0 2.6\nd rec 1.00 1.05\n"
    )
    utterances = list_utterances(data)
    assert utterances[0] == Utterance("a", str(wav), (0.5, 1.0))
    audio = [read_audio(u, 16000) for u in utterances]
    assert len(audio[0]) == 8000 and audio[0][0] == pytest.approx(0.25 * 32768, abs=1)
    assert len(audio[1]) == 3200  # overshoot < 0.5 s: cut at the end of the file
    assert audio[2] is None and audio[3] is None  # overshoot > 0.5 s; shorter than 0.1 s
    assert "Segment c" in caplog.text and "Segment d is too short" in caplog.text


def test_bad_segments_name_the_segment(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec {_wav(tmp_path / 'rec.wav', 1.0)}\n")
    (data / "segments").write_text("a other 0 1\n")
    with pytest.raises(DataDirError, match="segment 'a' refers to recording 'other'"):
        list_utterances(data)
    (data / "segments").write_text("a rec zero 1\n")
    with pytest.raises(DataDirError, match="segment 'a' has non-numeric times"):
        list_utterances(data)


def test_multichannel_audio_needs_a_channel(tmp_path):
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([np.zeros(1600), np.full(1600, 0.5)], axis=1), 16000)
    with pytest.raises(DataDirError, match="2 channels; pass --channel"):
        read_audio(Utterance("u", str(path), None), 16000)
    assert read_audio(Utterance("u", str(path), None), 16000, channel=1)[0] == 0.5 * 32768


def test_filter_keeps_kept_lines_verbatim(tmp_path):
    (tmp_path / "text").write_text("u1 a  b\nu2 c\n", encoding="utf-8")
    (tmp_path / "utt2spk").write_text("u1 s1\nu2 s2\n")
    (tmp_path / "wav.scp").write_text("u1 x.wav\nu2 y.wav\n")
    filter_utterance_files(tmp_path, ["u1"], segmented=False)
    assert (tmp_path / "text").read_text() == "u1 a  b\n"
    assert (tmp_path / "wav.scp").read_text() == "u1 x.wav\n"
    assert (tmp_path / "spk2utt").read_text() == "s1 u1\n"


def test_staged_directory_replaces_only_when_complete(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old").write_text("previous")
    with pytest.raises(RuntimeError):
        with staged_directory(output) as staging:
            (staging / "new").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (output / "old").read_text() == "previous"
    with staged_directory(output) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(f".out.tmp-{os.getpid()}-")
        (staging / "new").write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in output.iterdir()] == ["new"]
