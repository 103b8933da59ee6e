"""The PLM teacher, transcripts from token ids, and the plm_states cache."""

import os
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import torch

from espnet_gmot.espnet.plm_cache import check_plm_cache_covers_data, write_plm_cache
from espnet_gmot.transfer import PLMTeacher, token_ids_to_text
from tests.helpers.tiny_asr import make_tiny_bert


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def test_text_from_char_token_ids():
    tokens = ["<blank>", "<unk>", "他", "是", "<space>", "A", "<sos/eos>"]
    assert token_ids_to_text([2, 3, 1, 4, 5, 6], tokens, "[UNK]") == "他是 [UNK] A"


def test_text_from_sentencepiece_token_ids():
    tokens = ["<blank>", "<unk>", "\u2581he", "llo", "\u2581world", "<sos/eos>"]
    assert token_ids_to_text([2, 3, 4], tokens, "[UNK]") == "hello world"


def test_teacher_loads_lazily_through_from_pretrained(bert):
    teacher = PLMTeacher(str(bert), local_files_only=True)
    assert not teacher.loaded
    states, lengths, unk = teacher.encode(["他是老师", "我X"], torch.device("cpu"))
    assert teacher.loaded
    assert lengths.tolist() == [6, 4]  # [CLS] + chars + [SEP]
    assert states.shape == (2, 6, 32) and states.dtype == torch.float32
    assert unk.tolist() == [0, 1]
    from transformers import AutoModel, AutoTokenizer

    reference = AutoModel.from_pretrained(bert).eval()
    ids = AutoTokenizer.from_pretrained(bert)(["他是老师"], return_tensors="pt")
    with torch.no_grad():
        expected = reference(**ids).last_hidden_state
    assert torch.allclose(states[0], expected[0], atol=1e-6)


def test_missing_plm_is_a_clear_error(tmp_path):
    teacher = PLMTeacher(str(tmp_path / "nowhere"), local_files_only=True)
    with pytest.raises(OSError, match="model_conf.plm_conf.name_or_path"):
        teacher.encode(["他"], torch.device("cpu"))


def write_text(path, utts):
    path.write_text("".join(f"{u} {t}\n" for u, t in utts.items()), encoding="utf-8")
    return path


def test_cache_writes_resumes_and_matches_the_teacher(tmp_path, bert):
    utts = {f"u{k:02d}": s for k, s in enumerate(["他是老师", "我们去学校", "", "你好世界", "今天很好"])}
    text = write_text(tmp_path / "text", utts)
    teacher = PLMTeacher(str(bert))
    out = tmp_path / "cache"
    scp = write_plm_cache(text, out, teacher, batch_size=2, shard_size=2)
    cached = dict(kaldiio.load_scp(str(scp)))
    assert sorted(cached) == sorted(utts)
    for utt, sentence in utts.items():
        states, lengths, _ = teacher.encode([sentence], torch.device("cpu"))
        np.testing.assert_allclose(cached[utt], states[0, : lengths[0]].numpy(), atol=1e-6)
    # Interrupted run: one shard lost its scp (its ark may be half-written).
    shards = sorted((out / "shards").glob("*.scp"))
    assert len(shards) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    write_plm_cache(text, out, teacher, batch_size=2, shard_size=2)
    assert shards[1].exists()
    assert shards[0].stat().st_mtime_ns == mtimes[shards[0]]  # finished shards kept
    assert shards[2].stat().st_mtime_ns == mtimes[shards[2]]
    assert sorted(dict(kaldiio.load_scp(str(scp)))) == sorted(utts)


def test_training_refuses_a_cache_that_misses_utterances(tmp_path, bert):
    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们", "c": "你好"})
    partial = write_text(tmp_path / "partial_text", {"a": "他是"})
    scp = write_plm_cache(partial, tmp_path / "cache", PLMTeacher(str(bert)))
    args = ["--train_data_path_and_name_and_type", f"{tmp_path}/wav.scp,speech,sound",
            "--train_data_path_and_name_and_type", f"{text},text,text",
            f"--train_data_path_and_name_and_type={scp},plm_states,kaldi_ark"]
    with pytest.raises(SystemExit, match=r"lacks 2 of the 3 utterances .* \(b, c\)"):
        check_plm_cache_covers_data(args)
    full = write_plm_cache(text, tmp_path / "cache_full", PLMTeacher(str(bert)))
    check_plm_cache_covers_data(args[:-1] + [f"--train_data_path_and_name_and_type={full},plm_states,kaldi_ark"])


def test_dump_command_line(tmp_path, bert):
    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们"})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "espnet_gmot.bin.dump_plm_states", "--text", str(text),
         "--plm", str(bert), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(dict(kaldiio.load_scp(str(tmp_path / "out" / "plm_states.scp")))) == ["a", "b"]
    missing = subprocess.run(
        [sys.executable, "-m", "espnet_gmot.bin.dump_plm_states", "--text",
         str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o2")],
        capture_output=True, text=True, env=env,
    )
    assert missing.returncode != 0 and "no such file" in missing.stderr
    assert not (tmp_path / "o2").exists()
