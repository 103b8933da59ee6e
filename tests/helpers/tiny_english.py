"""A tiny English ASR corpus spoken by espeak-ng, and a tiny English teacher
trained on its text, for the English recipe's check (test_librispeech_check.py).

Sentences come from a few templates built around homophones that espeak-ng
speaks byte-identically (KNIGHT/NIGHT, SEA/SEE, EIGHT/ATE, ...), so that only
the context tells them apart, as with the Mandarin demo's 他/她. Speakers are
espeak-ng's English voices with a variant, speed and pitch each; the train and
test speakers differ, and so do the train and test sentences. The teacher is a
two-layer word-level BERT (uncased, like ``bert-base-uncased``) pretrained by
masked LM on the train sentences plus template sentences that are in no split,
never on a dev or test sentence.
"""

import itertools
import random
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from espnet_gmot.kaldi_data import utt2spk_to_spk2utt, write_kaldi_map

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "egs2" / "synth_mandarin" / "asr_gmot" / "local"))
from make_corpus import synthesize_wav_bytes  # noqa: E402

TEMPLATES = [
    "{person} WILL WRITE A {doc} TONIGHT",
    "TURN RIGHT AT THE {place}",
    "{person} CAN SEE THE SEA FROM THE {place}",
    "THE SUN WAS HOT ON THE {place}",
    "HER SON FOUND THE {thing}",
    "{person} ATE EIGHT {food}",
    "THE WIND BLEW THE BLUE {thing} AWAY",
    "THE KNIGHT RODE DOWN THE ROAD TO THE {place}",
    "{person} FELT WEAK ALL WEEK",
    "WE MEET AT NIGHT TO EAT {food}",
]
SLOTS = {
    "person": ["JOHN", "MARY", "THE TEACHER", "MY FATHER", "OUR NEIGHBOUR"],
    "doc": ["LETTER", "STORY", "REPORT"],
    "place": ["BRIDGE", "CORNER", "HILL", "STATION"],
    "thing": ["BALL", "HAT", "KITE", "BOOK"],
    "food": ["APPLES", "PEARS", "BREAD"],
}
# (espeak-ng voice, variant, words per minute, pitch); the last two are test speakers
SPEAKERS = [
    ("en-us", "m3", 165, 45), ("en-gb", "f2", 150, 60), ("en-us", "f4", 175, 55),
    ("en-gb-x-rp", "m1", 155, 40), ("en-gb-scotland", "m7", 160, 50), ("en-us", "klatt", 170, 50),
    ("en-gb", "m2", 160, 48), ("en-us", "f1", 158, 62),
]
TEST_SPEAKERS = 2


def all_sentences() -> List[str]:
    out = []
    for template in TEMPLATES:
        names = [n for n in SLOTS if "{" + n + "}" in template]
        for values in itertools.product(*(SLOTS[n] for n in names)):
            out.append(template.format(**dict(zip(names, values))))
    return out


def split_sentences(seed: int = 0, n_test: int = 24, n_unused: int = 16) -> Dict[str, List[str]]:
    """Disjoint train / test sentences, and ``unused`` ones that only the teacher reads."""
    sentences = all_sentences()
    random.Random(seed).shuffle(sentences)
    return {"test": sentences[:n_test], "unused": sentences[n_test:n_test + n_unused],
            "train": sentences[n_test + n_unused:]}


def write_set(root: Path, name: str, items: Sequence[tuple]) -> Path:
    """Kaldi data dir of ``(utt, sentence, speaker)`` items, wavs spoken by espeak-ng."""
    data_dir, wav_dir = root / "data" / name, root / "wav" / name
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, text, utt2spk = {}, {}, {}
    for utt, sentence, (voice, variant, wpm, pitch) in items:
        path = wav_dir / f"{utt}.wav"
        path.write_bytes(synthesize_wav_bytes(sentence, variant, wpm, pitch, voice=voice))
        spk = utt.split("-")[0]
        wav_scp[utt], text[utt], utt2spk[utt] = str(path), sentence, spk
    data_dir.mkdir(parents=True, exist_ok=True)
    for fname, entries in (("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk)):
        write_kaldi_map(data_dir / fname, sorted(entries.items()))
    write_kaldi_map(data_dir / "spk2utt", sorted(utt2spk_to_spk2utt(utt2spk).items()))
    return data_dir


def make_english_corpus(root: Path, seed: int = 0, train_voices_per_sentence: int = 2) -> Dict[str, Path]:
    """``train`` (each train sentence by ``train_voices_per_sentence`` train
    speakers), ``valid`` and ``test`` (test sentences by the test speakers)."""
    root = Path(root)
    sentences = split_sentences(seed)
    train_speakers = SPEAKERS[:-TEST_SPEAKERS]
    rng = random.Random(seed)
    train = []
    for k, sentence in enumerate(sentences["train"]):
        for s in rng.sample(range(len(train_speakers)), train_voices_per_sentence):
            train.append((f"spk{s}-tr{k:03d}", sentence, train_speakers[s]))
    held_out = []
    for k, sentence in enumerate(sentences["test"]):
        s = len(train_speakers) + k % TEST_SPEAKERS
        held_out.append((f"spk{s}-ts{k:03d}", sentence, SPEAKERS[s]))
    half = len(held_out) // 2
    return {
        "train": write_set(root, "train", train),
        "valid": write_set(root, "valid", held_out[:half]),
        "test": write_set(root, "test", held_out[half:]),
        "teacher_text": sentences["train"] + sentences["unused"],
    }


def train_english_teacher(path: Path, sentences: Sequence[str], steps: int = 300,
                          hidden_size: int = 32, seed: int = 0) -> Path:
    """A 2-layer uncased word-level BERT, pretrained by masked LM on ``sentences``
    with transformers' masking collator, saved with ``save_pretrained``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer, DataCollatorForLanguageModeling

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = sorted({w.lower() for s in all_sentences() for w in s.split()})
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizer(str(path / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=64)
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    encoded = [tokenizer(s) for s in sentences]
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = collator(rng.sample(encoded, min(32, len(encoded))))
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokenizer.save_pretrained(path)
    model.bert.save_pretrained(path)  # the encoder, as AutoModel loads it
    return path
