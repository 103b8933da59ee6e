"""Tests for the synthetic Mandarin recipe's corpus generator, teacher PLM and data prep.

They run the real scripts on the ``--tiny`` preset (60 utterances) and a
few-step teacher pretraining (marked ``slow``); the corpus tests skip only when
the ``espeak-ng`` binary is missing (install it with ``apt-get install -y espeak-ng``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import soundfile

from espnet_gmot.kaldi_data import read_kaldi_map, read_text

LOCAL_DIR = Path(__file__).resolve().parents[2] / "egs2" / "synth_mandarin" / "asr_gmot" / "local"
sys.path.insert(0, str(LOCAL_DIR))

import corpus_common  # noqa: E402
import make_corpus  # noqa: E402
import prepare_data  # noqa: E402
import train_teacher_plm  # noqa: E402

# Corpus tests synthesise speech: end-to-end, so slow.
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng binary not installed (apt-get install -y espeak-ng)",
)
UTT_ID = re.compile(r"^BAC009(S\d{4})W\d{4}$")


def generate(out_dir: Path, *extra: str) -> Path:
    make_corpus.main(["--out_dir", str(out_dir), "--tiny", "--nj", "2", *extra])
    return out_dir / "data_aishell"


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng binary not installed (apt-get install -y espeak-ng)")
    return generate(tmp_path_factory.mktemp("corpus"))


def snapshot(root: Path) -> dict[str, bytes]:
    """Content of every generated file except the timing-bearing statistics."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != corpus_common.STATS_NAME
    }


@pytest.mark.slow
@needs_espeak
def test_layout_and_wav_format(tiny_corpus: Path) -> None:
    rows = corpus_common.read_manifest(tiny_corpus / corpus_common.MANIFEST_NAME)
    assert [sum(r.split == s for r in rows) for s in ("train", "dev", "test")] == [40, 10, 10]
    wavs = sorted((tiny_corpus / "wav").rglob("*.wav"))
    assert len(wavs) == len(rows) == 60
    for row in rows:
        wav = tiny_corpus / row.wav
        split, speaker, name = wav.relative_to(tiny_corpus / "wav").parts
        match = UTT_ID.match(row.utt_id)
        assert match and match.group(1) == speaker == row.speaker
        assert (split, name) == (row.split, row.utt_id + ".wav")
        info = soundfile.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert info.frames > 16000 * 0.5
        assert abs(info.frames / 16000 - row.duration_s) < 1e-3
        assert 4 <= len(row.text) <= 16 and len(row.pinyin.split()) == len(row.text)
    lines = read_text(tiny_corpus / "transcript" / "aishell_transcript_v0.8.txt")
    assert set(lines) == {r.utt_id for r in rows}
    for row in rows:
        assert lines[row.utt_id].replace(" ", "") == row.text  # word-segmented, AISHELL style
    stats = json.loads((tiny_corpus / corpus_common.STATS_NAME).read_text(encoding="utf-8"))
    assert stats["splits"]["train"]["utterances"] == 40


@pytest.mark.slow
@needs_espeak
def test_splits_are_speaker_and_sentence_disjoint(tiny_corpus: Path) -> None:
    rows = corpus_common.read_manifest(tiny_corpus / corpus_common.MANIFEST_NAME)
    speakers = {s: {r.speaker for r in rows if r.split == s} for s in ("train", "dev", "test")}
    texts = {s: {r.text for r in rows if r.split == s} for s in ("train", "dev", "test")}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not speakers[a] & speakers[b]
        assert not texts[a] & texts[b]
    listed = (tiny_corpus / "sentences_test.txt").read_text(encoding="utf-8").split()
    assert set(listed) == texts["test"]


@pytest.mark.slow
@needs_espeak
def test_deterministic_for_a_seed(tiny_corpus: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "same")
    assert snapshot(again) == snapshot(tiny_corpus)
    other = generate(tmp_path / "other", "--seed", "7")
    assert (other / corpus_common.MANIFEST_NAME).read_bytes() != (
        tiny_corpus / corpus_common.MANIFEST_NAME
    ).read_bytes()


@pytest.mark.slow
@needs_espeak
def test_resume_reuses_finished_wavs(tiny_corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_corpus.parent, copy)  # copy2 keeps mtimes
    root = copy / "data_aishell"
    wavs = sorted((root / "wav").rglob("*.wav"))
    before = {p: p.stat().st_mtime_ns for p in wavs}
    removed = wavs[3]
    original = removed.read_bytes()
    removed.unlink()
    (root / ".done").unlink()  # simulate an interrupted run
    generate(copy)
    assert removed.read_bytes() == original
    for path, mtime in before.items():
        if path != removed:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    # A complete corpus is recognised by its marker and left untouched.
    mtime = removed.stat().st_mtime_ns
    generate(copy)
    assert removed.stat().st_mtime_ns == mtime
    # Different arguments on the same folder are refused rather than mixed in.
    with pytest.raises(SystemExit):
        generate(copy, "--seed", "8")


@pytest.mark.slow
@needs_espeak
def test_homophones_give_identical_audio(tiny_corpus: Path) -> None:
    def record(text: str) -> make_corpus.SentenceRecord:
        return make_corpus.SentenceRecord(
            sentence_id=text, hsk_level=1, text=text, words=tuple(text),
            pinyin=tuple(make_corpus.fallback_pinyin(text)), pause_after=(),
        )

    he, she, teacher_tone = record("他是老师"), record("她是老师"), record("他是老鼠")
    assert he.pinyin == she.pinyin and he.text != she.text
    speaker = ("f3", 160, 50)
    audio_he = make_corpus.synthesize_wav_bytes(make_corpus.espeak_input(he), *speaker)
    audio_she = make_corpus.synthesize_wav_bytes(make_corpus.espeak_input(she), *speaker)
    audio_other = make_corpus.synthesize_wav_bytes(make_corpus.espeak_input(teacher_tone), *speaker)
    assert audio_he == audio_she
    assert audio_he != audio_other
    assert audio_he != make_corpus.synthesize_wav_bytes(make_corpus.espeak_input(he), "m3", 160, 50)
    stats = json.loads((tiny_corpus / corpus_common.STATS_NAME).read_text(encoding="utf-8"))
    assert stats["homophones"]["syllables_with_several_chars"] > 0
    assert stats["homophones"]["test_sentences_with_homophones"] > 0


def test_sentence_pool_limits_inventory_and_covers_eval() -> None:
    import random

    records = make_corpus.load_hsk_sentences()
    pool = make_corpus.filter_sentence_pool(records, 4, 16, 6, 5)
    assert 1000 < len(pool) < len(records)
    train, dev, test = make_corpus.select_eval_sentences(pool, 50, 50, 5, random.Random(1))
    train_counts: dict[str, int] = {}
    for r in train:
        for c in r.text:
            train_counts[c] = train_counts.get(c, 0) + 1
    assert all(train_counts.get(c, 0) >= 5 for r in dev + test for c in r.text)
    assert not {r.text for r in train} & {r.text for r in dev + test}


def test_people_daily_clause_parsing() -> None:
    raw = (
        "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t  新年/t  讲话/n  "
        "（/w  附/v  图片/n  １/m  张/q  ）/w\n"
        "同胞/n  们/k  、/w  朋友/n  们/k  ：/w\n"
    )
    assert train_teacher_plm.pd_clauses(raw, 4, 30) == ["迈向充满希望的新世纪", "一九九八年新年讲话"]
    assert train_teacher_plm.pd_clauses(raw, 2, 30)[-2:] == ["同胞们", "朋友们"]


def test_pretraining_text_excludes_eval_sentences() -> None:
    clauses = ["他是我的老师", "今天我们明天去公园吗", "平常的句子", "平常的句子"] + [f"第{i}个句子" for i in range(40)]
    text = train_teacher_plm.build_pretraining_text(
        clauses, corpus_train=["她喜欢喝茶", "他是我的老师"],
        excluded={"他是我的老师", "我们明天去公园"}, num_heldout=3, corpus_train_repeat=2, seed=1,
    )
    everything = text.train + text.heldout
    assert not any("他是我的老师" in t or "我们明天去公园" in t for t in everything)
    assert everything.count("平常的句子") == 1  # de-duplicated
    assert text.train.count("她喜欢喝茶") == 2 and "她喜欢喝茶" not in text.heldout
    assert len(text.heldout) == 3 and not set(text.heldout) & set(text.train)
    assert text.num_pd_removed == 2


def fake_people_daily(path: Path, dev_sentence: str, test_sentence: str) -> None:
    """A small file in the tagged 199801.txt format, with clauses to be excluded."""
    from hsk_sentences_audio import load_sentences

    lines = []
    for record in load_sentences()[:400]:
        words = [corpus_common.hanzi_only(t["word"]) for t in record["tokens"]]
        lines.append("  ".join(f"{w}/n" for w in words if w) + "  。/w")
    lines.append(f"{test_sentence}/n  ，/w  平常/a  的/u  句子/n  。/w")  # equal to a test sentence
    lines.append(f"今天/t  {dev_sentence}/n  吗/y  。/w")  # contains a dev sentence
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow  # pretrains a teacher
def test_teacher_plm_tiny_run(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    dev_sentence, test_sentence = "我们明天去公园", "他是我的老师"
    rows = [
        corpus_common.ManifestRow("BAC009S0001W0001", "train", "S0001", "x1", 1, "她喜欢喝茶",
                                  "她 喜欢 喝 茶", "ta1 xi3 huan5 he1 cha2", "wav/a.wav", 1.0),
        corpus_common.ManifestRow("BAC009S0002W0001", "dev", "S0002", "x2", 1, dev_sentence,
                                  "我们 明天 去 公园", "wo3 men5 ming2 tian1 qu4 gong1 yuan2", "wav/b.wav", 1.0),
        corpus_common.ManifestRow("BAC009S0003W0001", "test", "S0003", "x3", 1, test_sentence,
                                  "他 是 我 的 老师", "ta1 shi4 wo3 de5 lao3 shi1", "wav/c.wav", 1.0),
    ]
    manifest = tmp_path / "manifest.tsv"
    corpus_common.write_manifest(manifest, rows)
    pd_file = tmp_path / "199801.txt"
    fake_people_daily(pd_file, dev_sentence, test_sentence)
    out_dir = tmp_path / "teacher"
    argv = [
        "--out_dir", str(out_dir), "--pd_corpus", str(pd_file), "--corpus_manifest", str(manifest),
        "--max_steps", "3", "--max_minutes", "2", "--num_heldout", "20", "--hidden_size", "32",
        "--num_layers", "1", "--num_heads", "2", "--intermediate_size", "64", "--batch_size", "8",
        "--num_threads", "1", "--warmup_steps", "2",
    ]
    train_teacher_plm.main(argv)

    pretrain_lines = (out_dir / "pretrain_text.txt").read_text(encoding="utf-8").splitlines()
    assert "她喜欢喝茶" in pretrain_lines
    assert not any(dev_sentence in line or test_sentence in line for line in pretrain_lines)

    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    model = AutoModel.from_pretrained(str(out_dir))
    assert model.config.max_position_embeddings == 512
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("我们喜欢老师")["input_ids"])
    assert tokens == ["[CLS]", "我", "们", "喜", "欢", "老", "师", "[SEP]"]
    vocab = (out_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert set(dev_sentence + test_sentence) <= set(vocab)  # corpus characters are all covered
    evaluation = json.loads((out_dir / "mlm_eval.json").read_text(encoding="utf-8"))
    assert evaluation["steps"] == 3
    heldout = evaluation["heldout_people_daily"]
    masked = heldout["masked_tokens"]
    assert heldout["sequences"] == 20 and masked > 0
    # Accuracies are counts of masked tokens (rounded to 4 digits).
    for key in ("accuracy", "frequent_char_baseline_accuracy"):
        assert heldout[key] == round(round(heldout[key] * masked) / masked, 4), key
    # Three steps from BERT's initialisation (std 0.02) leave the predictions
    # near uniform: the mean cross-entropy over the masked tokens is about
    # log(vocabulary size) (6.06 vs. log 440 = 6.09 when written); scoring the
    # wrong positions or averaging over the wrong count leaves this band.
    assert abs(heldout["loss"] - math.log(evaluation["vocab_size"])) < 0.5
    assert evaluation["vocab_size"] == len(vocab)

    # Same arguments again: recognised as finished, model files untouched.
    mtime = (out_dir / "model.safetensors").stat().st_mtime_ns
    train_teacher_plm.main(argv)
    assert (out_dir / "model.safetensors").stat().st_mtime_ns == mtime

    # The control teacher: asking for it leaves the trained teacher as it is and
    # writes the same architecture and tokenizer with untrained weights.
    control_dir = tmp_path / "teacher_control"
    train_teacher_plm.main([*argv, "--control_dir", str(control_dir)])
    assert (out_dir / "model.safetensors").stat().st_mtime_ns == mtime
    control = AutoModel.from_pretrained(str(control_dir))
    # The same configuration; the trained teacher was saved from BertForMaskedLM.
    assert ({k: v for k, v in control.config.to_dict().items() if k not in ("_name_or_path", "architectures")}
            == {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "architectures")})
    control_tokenizer = AutoTokenizer.from_pretrained(str(control_dir))
    assert control_tokenizer("我们喜欢老师")["input_ids"] == tokenizer("我们喜欢老师")["input_ids"]
    trained, untrained = model.state_dict(), control.state_dict()
    assert trained.keys() == untrained.keys()
    embeddings = "embeddings.word_embeddings.weight"
    assert not torch.equal(trained[embeddings], untrained[embeddings])
    # BERT's own initialisation: normal(0, 0.02) weights, LayerNorm at identity.
    assert abs(untrained[embeddings].std().item() - 0.02) < 0.002
    assert torch.equal(untrained["embeddings.LayerNorm.weight"],
                       torch.ones_like(untrained["embeddings.LayerNorm.weight"]))
    control_mtime = (control_dir / "model.safetensors").stat().st_mtime_ns
    train_teacher_plm.main([*argv, "--control_dir", str(control_dir)])
    assert (control_dir / "model.safetensors").stat().st_mtime_ns == control_mtime


@pytest.mark.slow
@needs_espeak
def test_prepare_data_dirs_are_kaldi_consistent(tiny_corpus: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token_list = data_dir / "zh_token_list" / "char" / "tokens.txt"
    prepare_data.main(["--corpus_dir", str(tiny_corpus.parent), "--data_dir", str(data_dir),
                       "--token_list", str(token_list)])
    rows = corpus_common.read_manifest(tiny_corpus / corpus_common.MANIFEST_NAME)
    for split in ("train", "dev", "test"):
        files = {}
        for name in ("wav.scp", "text", "utt2spk"):
            files[name] = read_kaldi_map(data_dir / split / name)  # refuses duplicate keys
            assert list(files[name]) == sorted(files[name])
        assert set(files["wav.scp"]) == set(files["text"]) == set(files["utt2spk"])
        assert set(files["text"]) == {r.utt_id for r in rows if r.split == split}
        assert all(Path(p).is_file() for p in files["wav.scp"].values())
        assert all(" " not in t for t in files["text"].values())
        spk2utt = {s: us.split() for s, us in read_kaldi_map(data_dir / split / "spk2utt").items()}
        assert sorted(spk2utt) == list(spk2utt)
        assert {u: s for s, us in spk2utt.items() for u in us} == files["utt2spk"]
        by_speaker = sorted(files["utt2spk"], key=lambda u: (files["utt2spk"][u], u))
        assert by_speaker == sorted(files["utt2spk"])  # Kaldi's sorting consistency
    tokens = token_list.read_text(encoding="utf-8").split("\n")[:-1]
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(set(tokens)) == len(tokens)
    train_chars = {c for r in rows if r.split == "train" for c in r.text}
    assert set(tokens[2:-1]) == train_chars
    report = json.loads((token_list.parent / "oov_report.json").read_text(encoding="utf-8"))
    assert set(report) == {"dev", "test"}
