#!/usr/bin/env python3
"""Generate a small synthetic Mandarin ASR corpus in the AISHELL-1 layout.

Sentences come from the PyPI package ``hsk-sentences-audio`` (4,354 graded
HSK sentences with hand-made numbered-tone pinyin and word segmentation);
``pypinyin`` is only used for a sentence whose packaged pinyin does not align
one syllable per character.  Speech is synthesised by ``espeak-ng`` with the
``cmn-latn-pinyin`` voice fed the numbered pinyin (so homophones such as
他/她/它 ``ta1`` give byte-identical audio and can only be told apart from
context), one voice variant / speed / pitch combination per speaker, and
resampled to 16 kHz mono 16-bit PCM.

Output (``<out_dir>/data_aishell``)::

    wav/{train,dev,test}/<speaker>/<utt>.wav   e.g. wav/train/S0001/BAC009S0001W0001.wav
    transcript/aishell_transcript_v0.8.txt     "<utt> <word> <word> ..." (word-segmented,
                                                no punctuation, like AISHELL-1; the ESPnet
                                                data prep removes the spaces)
    manifest.tsv        every utterance: split, speaker, HSK sentence id, text, words, pinyin, wav, duration
    speakers.tsv        speaker -> split, espeak-ng variant, speed, pitch
    sentences_{train,dev,test}.txt   the distinct sentences of each split (hanzi only)
    corpus_stats.json   sizes, hours, character inventory, coverage and homophone statistics
    .done               marker holding the generation config (a re-run with it returns at once)

Splits are speaker-disjoint, and dev/test *sentences* are disjoint from the
train sentences (AISHELL-1 style) while their characters are guaranteed to
occur at least ``--min_train_char_count`` times among the train sentences.
Everything is deterministic for a given ``--seed`` (and espeak-ng version).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import multiprocessing
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_common import (  # noqa: E402
    MANIFEST_NAME,
    SPEAKERS_NAME,
    SPLITS,
    STATS_NAME,
    ManifestRow,
    atomic_write_json,
    chars_by_syllable,
    hanzi_only,
    write_manifest,
)

from espnet_gmot.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402

TARGET_SAMPLE_RATE = 16000
ESPEAK_VOICE = "cmn-latn-pinyin"
TRANSCRIPT_RELPATH = Path("transcript") / "aishell_transcript_v0.8.txt"
UTT_PREFIX = "BAC009"  # AISHELL-1 ids look like BAC009S0002W0122
DONE_MARKER = ".done"

# espeak-ng voice variants that give audibly distinct, intelligible voices.
# Left out on purpose: whisper variants (no F0, hence no tones), novelty
# voices (robots, "Demonic", "croak"), near-silent ones ("Hugo") and exact
# duplicates (klatt6 == klatt == caleb, Michel == michael).
VOICE_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5",
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "Alex", "Alicia", "Andy", "Annie", "adam", "aunty", "belinda", "benjamin",
    "boris", "david", "ed", "edward", "Gene", "grandma", "grandpa", "gustave",
    "iven", "john", "Lee", "linda", "max", "michael", "Mike", "norbert", "paul",
    "quincy", "rob", "robert", "shelby", "steph", "Storm", "travis", "victor", "zac",
)
SPEED_RANGE_WPM = (140, 185)
PITCH_RANGE = (30, 70)

# Sentence-internal punctuation that becomes a short pause (a comma for espeak).
PAUSE_PUNCTUATION = set("，、；：,;:")


@dataclass(frozen=True)
class SentenceRecord:
    """One candidate sentence: hanzi-only text with aligned pinyin."""

    sentence_id: str
    hsk_level: int
    text: str  # hanzi only
    words: tuple[str, ...]  # word segmentation of ``text``
    pinyin: tuple[str, ...]  # one numbered-tone syllable per character of ``text``
    pause_after: tuple[int, ...]  # character indices followed by a pause


@dataclass(frozen=True)
class SpeakerProfile:
    """A synthetic speaker: an espeak-ng variant with its own speed and pitch."""

    speaker_id: str
    split: str
    variant: str
    speed_wpm: int
    pitch: int


@dataclass(frozen=True)
class SynthesisJob:
    """Everything a worker needs to produce one wav file."""

    utt_id: str
    wav_path: str
    espeak_text: str
    variant: str
    speed_wpm: int
    pitch: int


# --------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------


def fallback_pinyin(text: str) -> list[str]:
    """Numbered-tone pinyin from pypinyin (neutral tone written as 5, ü as v)."""
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)


def word_segmentation(record: dict, text: str) -> tuple[str, ...]:
    """Words of ``text`` from the package's token list, or characters if it does not fit."""
    words = [hanzi_only(token.get("word", "")) for token in record.get("tokens") or []]
    words = [word for word in words if word]
    if "".join(words) == text:
        return tuple(words)
    return tuple(text)


def pause_positions(chinese: str) -> tuple[int, ...]:
    """Indices of characters followed by sentence-internal punctuation."""
    positions = []
    hanzi_seen = 0
    total = len(hanzi_only(chinese))
    for char in chinese:
        if hanzi_only(char):
            hanzi_seen += 1
        elif char in PAUSE_PUNCTUATION and 0 < hanzi_seen < total:
            positions.append(hanzi_seen - 1)
    return tuple(sorted(set(positions)))


def load_hsk_sentences() -> list[SentenceRecord]:
    """All packaged HSK sentences, de-duplicated by their hanzi text (first wins)."""
    try:
        from hsk_sentences_audio import load_sentences
    except ImportError as error:
        raise SystemExit(
            "make_corpus.py needs the PyPI package 'hsk-sentences-audio' "
            "(pip install hsk-sentences-audio==1.0.0)"
        ) from error
    records: list[SentenceRecord] = []
    seen_texts: set[str] = set()
    for raw in load_sentences():
        text = hanzi_only(raw["chinese"])
        if not text or text in seen_texts:
            continue
        seen_texts.add(text)
        syllables = (raw.get("pinyin_numbered") or "").split()
        if len(syllables) != len(text) or not all(s[-1:] in "12345" for s in syllables):
            syllables = fallback_pinyin(text)
        if len(syllables) != len(text):
            continue  # cannot align pinyin with characters: unusable for a clean corpus
        records.append(
            SentenceRecord(
                sentence_id=str(raw["id"]),
                hsk_level=int(raw["hsk_level"]),
                text=text,
                words=word_segmentation(raw, text),
                pinyin=tuple(s.lower() for s in syllables),
                pause_after=pause_positions(raw["chinese"]),
            )
        )
    return records


def filter_sentence_pool(
    records: Sequence[SentenceRecord],
    min_chars: int,
    max_chars: int,
    max_hsk_level: int,
    min_char_count: int,
) -> list[SentenceRecord]:
    """Keep short sentences made only of frequent characters.

    A sentence survives if its length is within bounds, its HSK level is at
    most ``max_hsk_level`` and every character occurs in at least
    ``min_char_count`` surviving sentences.  Dropping a sentence lowers other
    characters' counts, so the filter is iterated to a fixed point.  This
    keeps the character inventory small enough for a CTC model trained for
    minutes on a CPU.
    """
    pool = [
        r
        for r in records
        if min_chars <= len(r.text) <= max_chars and r.hsk_level <= max_hsk_level
    ]
    while True:
        counts = collections.Counter(char for r in pool for char in set(r.text))
        kept = [r for r in pool if all(counts[char] >= min_char_count for char in r.text)]
        if len(kept) == len(pool):
            return kept
        pool = kept


def select_eval_sentences(
    pool: Sequence[SentenceRecord],
    num_dev: int,
    num_test: int,
    min_train_char_count: int,
    rng: random.Random,
) -> tuple[list[SentenceRecord], list[SentenceRecord], list[SentenceRecord]]:
    """Split ``pool`` into disjoint (train, dev, test) sentence lists.

    Candidates are visited in a seeded random order; one is moved to dev/test
    only if every one of its characters still occurs in at least
    ``min_train_char_count`` of the remaining (train) sentences, so the test
    vocabulary is well covered by training data.
    """
    order = list(pool)
    rng.shuffle(order)
    train_counts = collections.Counter(char for r in order for char in r.text)
    wanted = num_dev + num_test
    chosen: list[SentenceRecord] = []
    chosen_ids: set[str] = set()
    for record in order:
        if len(chosen) == wanted:
            break
        usage = collections.Counter(record.text)
        if all(train_counts[char] - n >= min_train_char_count for char, n in usage.items()):
            train_counts.subtract(usage)
            chosen.append(record)
            chosen_ids.add(record.sentence_id)
    if len(chosen) < wanted:
        raise SystemExit(
            f"only {len(chosen)} of the {wanted} requested dev+test sentences keep every "
            f"character at >= {min_train_char_count} train occurrences; lower "
            "--min_train_char_count, --num_{dev,test}_speakers or --eval_utts_per_speaker"
        )
    train = [r for r in order if r.sentence_id not in chosen_ids]
    return train, chosen[:num_dev], chosen[num_dev:]


def deal_train_sentences(
    train_pool: Sequence[SentenceRecord], total: int, rng: random.Random
) -> list[SentenceRecord]:
    """``total`` train sentences: the pool in reshuffled passes, so every
    sentence is read by roughly ``total / len(pool)`` different speakers."""
    if not train_pool:
        raise SystemExit("no train sentences left after choosing dev/test sentences")
    sequence: list[SentenceRecord] = []
    while len(sequence) < total:
        batch = list(train_pool)
        rng.shuffle(batch)
        sequence.extend(batch)
    return sequence[:total]


# --------------------------------------------------------------------------
# Speakers and synthesis
# --------------------------------------------------------------------------


def make_speakers(
    num_train: int,
    num_dev: int,
    num_test: int,
    eval_voices: str,
    rng: random.Random,
    speed_range: Sequence[int] = SPEED_RANGE_WPM,
    pitch_range: Sequence[int] = PITCH_RANGE,
) -> list[SpeakerProfile]:
    """Distinct (variant, speed, pitch) profiles; ids S0001.. train, then dev, then test.

    Train speakers cycle through the shuffled variants.  With
    ``eval_voices="seen"`` dev/test speakers reuse train speakers' variants
    (new speed/pitch combinations, so still new speakers); with ``"unseen"``
    they get variants no train speaker has (harder: a new voice timbre).
    """
    variants = list(VOICE_VARIANTS)
    rng.shuffle(variants)
    train_variants = [variants[i % len(variants)] for i in range(num_train)]
    num_eval = num_dev + num_test
    if eval_voices == "unseen":
        spare = [v for v in variants if v not in set(train_variants)]
        if len(spare) < num_eval:
            raise SystemExit(
                f"--eval_voices unseen needs {num_eval} variants unused by the {num_train} train "
                f"speakers, but only {len(spare)} of {len(variants)} are left; use fewer speakers "
                "or --eval_voices seen"
            )
        eval_variants = spare[:num_eval]
    else:
        distinct_train = list(dict.fromkeys(train_variants))
        eval_variants = [distinct_train[i % len(distinct_train)] for i in range(num_eval)]
    used: set[tuple[str, int, int]] = set()
    speakers: list[SpeakerProfile] = []
    splits = ["train"] * num_train + ["dev"] * num_dev + ["test"] * num_test
    for index, (split, variant) in enumerate(zip(splits, train_variants + eval_variants), 1):
        while True:
            speed = rng.randint(*speed_range)
            pitch = rng.randint(*pitch_range)
            if (variant, speed, pitch) not in used:
                break
        used.add((variant, speed, pitch))
        speakers.append(SpeakerProfile(f"S{index:04d}", split, variant, speed, pitch))
    return speakers


def espeak_input(record: SentenceRecord) -> str:
    """Numbered pinyin for espeak-ng, with commas where the sentence pauses."""
    pieces = []
    for index, syllable in enumerate(record.pinyin):
        pieces.append(syllable + ("," if index in record.pause_after else ""))
    return " ".join(pieces)


def find_espeak() -> str:
    """Path of the espeak-ng binary, or exit with installation advice."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise SystemExit(
            "espeak-ng not found on PATH; install it with: apt-get install -y espeak-ng"
        )
    return path


def synthesize_wav_bytes(
    espeak_text: str, variant: str, speed_wpm: int, pitch: int, espeak_bin: str = "espeak-ng",
    voice: str = ESPEAK_VOICE,
) -> bytes:
    """Speak numbered pinyin (or, with another ``voice`` such as ``en-us``, that
    language's text) with espeak-ng and return 16 kHz mono int16 WAV bytes.

    Deterministic: the same text and speaker settings give byte-identical output.
    """
    command = [
        espeak_bin,
        "-v", f"{voice}+{variant}",
        "-s", str(speed_wpm),
        "-p", str(pitch),
        "--stdout",
        espeak_text,
    ]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) <= 44:
        raise RuntimeError(
            f"espeak-ng failed (rc={result.returncode}) for {espeak_text!r} with voice "
            f"{variant}: {result.stderr.decode(errors='replace').strip()}"
        )
    samples, sample_rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    audio = soxr.resample(samples, sample_rate, TARGET_SAMPLE_RATE, quality="HQ")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0.99:  # resampling can overshoot; scale rather than clip
        audio = audio * (0.99 / peak)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, TARGET_SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def run_synthesis_job(job: SynthesisJob) -> tuple[str, float, bool]:
    """Worker: synthesise one utterance unless its wav already exists.

    Returns (utt_id, duration in seconds, whether it was newly synthesised).
    Files are written atomically, so an existing file is always complete.
    """
    path = Path(job.wav_path)
    if path.is_file():
        return job.utt_id, soundfile.info(str(path)).frames / TARGET_SAMPLE_RATE, False
    data = synthesize_wav_bytes(job.espeak_text, job.variant, job.speed_wpm, job.pitch)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    frames = (len(data) - 44) // 2  # soundfile writes a canonical 44-byte header
    return job.utt_id, frames / TARGET_SAMPLE_RATE, True


def synthesize_all(jobs: Sequence[SynthesisJob], nj: int) -> dict[str, float]:
    """Run the jobs (in parallel when ``nj > 1``) with progress output."""
    durations: dict[str, float] = {}
    started = time.time()
    new_count = 0
    step = max(1, len(jobs) // 10)

    def report(done: int) -> None:
        elapsed = time.time() - started
        print(
            f"  synthesised {done}/{len(jobs)} ({100.0 * done / max(1, len(jobs)):.0f}%), "
            f"{new_count} new, {elapsed:.1f}s",
            flush=True,
        )

    if nj > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(nj) as pool:
            results: Iterable = pool.imap_unordered(run_synthesis_job, jobs, chunksize=8)
            for done, (utt_id, duration, is_new) in enumerate(results, 1):
                durations[utt_id] = duration
                new_count += int(is_new)
                if done % step == 0 or done == len(jobs):
                    report(done)
    else:
        for done, job in enumerate(jobs, 1):
            utt_id, duration, is_new = run_synthesis_job(job)
            durations[utt_id] = duration
            new_count += int(is_new)
            if done % step == 0 or done == len(jobs):
                report(done)
    return durations


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def corpus_statistics(rows: Sequence[ManifestRow], coverage_threshold: int = 5) -> dict:
    """Sizes, hours, inventory, coverage and homophone statistics of the corpus.

    Homophone measures (for the test split):
    * ``test_sentences_with_homophones``: sentences holding a character whose
      toned syllable is shared by another character of the corpus (the audio
      alone cannot decide between them);
    * ``test_sentences_needing_context``: sentences holding a character that
      is not the most frequent train character for its syllable, i.e. a
      context-free syllable->character lookup gets it wrong;
    * ``syllable_oracle_test_cer``: CER of that lookup with perfect acoustics,
      a floor for a model that ignores linguistic context.
    """
    by_split = {split: [r for r in rows if r.split == split] for split in SPLITS}
    stats: dict = {"splits": {}}
    for split, split_rows in by_split.items():
        stats["splits"][split] = {
            "utterances": len(split_rows),
            "speakers": len({r.speaker for r in split_rows}),
            "distinct_sentences": len({r.text for r in split_rows}),
            "characters": sum(len(r.text) for r in split_rows),
            "hours": round(sum(r.duration_s for r in split_rows) / 3600.0, 4),
            "mean_chars_per_utt": round(
                sum(len(r.text) for r in split_rows) / max(1, len(split_rows)), 2
            ),
        }
    train_chars = collections.Counter(char for r in by_split["train"] for char in r.text)
    stats["char_inventory"] = {
        "train": len(train_chars),
        "all_splits": len({char for r in rows for char in r.text}),
    }
    train_sentences = {r.text for r in by_split["train"]}
    for split in ("dev", "test"):
        tokens = [char for r in by_split[split] for char in r.text]
        types = set(tokens)
        covered_tokens = sum(train_chars[c] >= coverage_threshold for c in tokens)
        stats[f"{split}_coverage"] = {
            f"token_pct_seen_ge{coverage_threshold}_in_train": round(
                100.0 * covered_tokens / max(1, len(tokens)), 2
            ),
            f"type_pct_seen_ge{coverage_threshold}_in_train": round(
                100.0 * sum(train_chars[c] >= coverage_threshold for c in types) / max(1, len(types)), 2
            ),
            "type_pct_seen_in_train": round(
                100.0 * sum(train_chars[c] > 0 for c in types) / max(1, len(types)), 2
            ),
            "sentences_also_in_train": len({r.text for r in by_split[split]} & train_sentences),
        }

    # Syllable -> character statistics over the whole corpus (the audio of a
    # syllable is identical whatever character it stands for).
    homophones = chars_by_syllable(rows)
    train_pairs: collections.Counter = collections.Counter(
        (syllable, char) for r in by_split["train"] for char, syllable in zip(r.text, r.pinyin.split())
    )
    best_char: dict[str, str] = {}
    for (syllable, char), count in sorted(train_pairs.items()):
        if syllable not in best_char or count > train_pairs[(syllable, best_char[syllable])]:
            best_char[syllable] = char
    ambiguous_syllables = {s for s, chars in homophones.items() if len(chars) > 1}

    test_rows = by_split["test"]
    with_homophones = 0
    needing_context = 0
    oracle_errors = 0
    homophone_examples: collections.Counter = collections.Counter()
    for r in test_rows:
        pairs = list(zip(r.text, r.pinyin.split()))
        if any(s in ambiguous_syllables for _, s in pairs):
            with_homophones += 1
        wrong = [(c, s) for c, s in pairs if best_char.get(s) != c]
        oracle_errors += len(wrong)
        if wrong:
            needing_context += 1
        for char, syllable in pairs:
            if syllable in ambiguous_syllables:
                homophone_examples[syllable] += 1
    test_chars = sum(len(r.text) for r in test_rows)
    stats["homophones"] = {
        "syllables_in_corpus": len(homophones),
        "syllables_with_several_chars": len(ambiguous_syllables),
        "test_sentences": len(test_rows),
        "test_sentences_with_homophones": with_homophones,
        "test_sentences_needing_context": needing_context,
        "syllable_oracle_test_cer_pct": round(100.0 * oracle_errors / max(1, test_chars), 2),
        "frequent_test_homophone_sets": {
            s: "".join(sorted(homophones[s])) for s, _ in homophone_examples.most_common(12)
        },
    }
    return stats


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out_dir", type=Path, required=True,
                        help="corpus root; the corpus is written to <out_dir>/data_aishell")
    parser.add_argument("--seed", type=int, default=20240611, help="random seed (output is deterministic for a seed)")
    parser.add_argument("--num_train_speakers", type=int, default=40)
    parser.add_argument("--num_dev_speakers", type=int, default=5)
    parser.add_argument("--num_test_speakers", type=int, default=5)
    parser.add_argument("--train_utts_per_speaker", type=int, default=100)
    parser.add_argument("--eval_utts_per_speaker", type=int, default=40,
                        help="utterances per dev/test speaker (each a distinct sentence)")
    parser.add_argument("--min_chars", type=int, default=4, help="shortest sentence, in characters")
    parser.add_argument("--max_chars", type=int, default=16, help="longest sentence, in characters")
    parser.add_argument("--max_hsk_level", type=int, default=6, help="use HSK levels 1..N only")
    parser.add_argument("--min_char_count", type=int, default=5,
                        help="keep sentences whose every character occurs in >= N kept sentences "
                             "(limits the character inventory; with all HSK levels 4 gives ~2700 "
                             "sentences/825 chars, 5 ~2000/633, 6 and above leave nothing)")
    parser.add_argument("--min_train_char_count", type=int, default=5,
                        help="every dev/test character must occur in >= N train sentences")
    parser.add_argument("--eval_voices", choices=["seen", "unseen"], default="seen",
                        help="dev/test speakers use espeak-ng variants that train speakers also use "
                             "(with their own speed and pitch), or variants no train speaker uses")
    parser.add_argument("--speed_range", type=int, nargs=2, default=list(SPEED_RANGE_WPM),
                        metavar=("LO", "HI"), help="espeak-ng speaking rate range, words per minute")
    parser.add_argument("--pitch_range", type=int, nargs=2, default=list(PITCH_RANGE),
                        metavar=("LO", "HI"), help="espeak-ng base pitch range (0-99)")
    parser.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    parser.add_argument("--tiny", action="store_true",
                        help="test preset: 4 train speakers x 10 utts, 1 dev and 1 test speaker x 10 utts")
    return parser


def generation_config(args: argparse.Namespace) -> dict:
    """The arguments that determine the corpus content (``nj`` does not)."""
    keys = [
        "seed", "num_train_speakers", "num_dev_speakers", "num_test_speakers",
        "train_utts_per_speaker", "eval_utts_per_speaker", "min_chars", "max_chars",
        "max_hsk_level", "min_char_count", "min_train_char_count", "eval_voices",
        "speed_range", "pitch_range",
    ]
    config = {key: getattr(args, key) for key in keys}
    config["voice_variants"] = list(VOICE_VARIANTS)
    config["format_version"] = 1
    return config


def apply_presets(args: argparse.Namespace) -> None:
    if args.tiny:
        args.num_train_speakers, args.train_utts_per_speaker = 4, 10
        args.num_dev_speakers, args.num_test_speakers, args.eval_utts_per_speaker = 1, 1, 10
    for name in ("num_train_speakers", "num_dev_speakers", "num_test_speakers",
                 "train_utts_per_speaker", "eval_utts_per_speaker", "nj"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1 (got {getattr(args, name)})")
    for name, low, high in (("speed_range", 80, 450), ("pitch_range", 0, 99)):
        lo, hi = getattr(args, name)
        if not low <= lo <= hi <= high:
            raise SystemExit(f"--{name} must be LO HI with {low} <= LO <= HI <= {high} (got {lo} {hi})")
        setattr(args, name, [lo, hi])
    if not 1 <= args.min_chars <= args.max_chars:
        raise SystemExit(f"need 1 <= --min_chars <= --max_chars (got {args.min_chars}, {args.max_chars})")


def make_corpus(args: argparse.Namespace) -> dict:
    """Generate (or resume) the corpus described by ``args``; returns its statistics."""
    apply_presets(args)
    corpus_root = Path(args.out_dir) / "data_aishell"
    config = generation_config(args)
    done_path = corpus_root / DONE_MARKER
    if done_path.is_file():
        previous = json.loads(done_path.read_text(encoding="utf-8"))
        if previous == config:
            print(f"corpus already complete in {corpus_root} (same config); nothing to do")
            return json.loads((corpus_root / STATS_NAME).read_text(encoding="utf-8"))
        raise SystemExit(
            f"{corpus_root} holds a corpus generated with different arguments "
            f"({done_path}); choose another --out_dir or delete that directory"
        )
    config_path = corpus_root / "generation_config.json"
    has_wavs = (corpus_root / "wav").is_dir() and any((corpus_root / "wav").rglob("*.wav"))
    if (
        has_wavs
        and config_path.is_file()
        and json.loads(config_path.read_text(encoding="utf-8")) != config
    ):
        raise SystemExit(
            f"{corpus_root} holds a partial corpus generated with different arguments "
            f"({config_path}); choose another --out_dir or delete that directory"
        )
    espeak_bin = find_espeak()
    espeak_version = subprocess.run(
        [espeak_bin, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    corpus_root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, config)

    started = time.time()
    rng = random.Random(args.seed)
    records = load_hsk_sentences()
    pool = filter_sentence_pool(
        records, args.min_chars, args.max_chars, args.max_hsk_level, args.min_char_count
    )
    if not pool:
        raise SystemExit(
            f"no sentence has {args.min_chars}-{args.max_chars} characters that all occur in >= "
            f"{args.min_char_count} such sentences (HSK level <= {args.max_hsk_level}); "
            "lower --min_char_count or raise --max_hsk_level"
        )
    num_dev = args.num_dev_speakers * args.eval_utts_per_speaker
    num_test = args.num_test_speakers * args.eval_utts_per_speaker
    print(
        f"{len(records)} HSK sentences, {len(pool)} in the pool "
        f"({len({c for r in pool for c in r.text})} characters); "
        f"choosing {num_dev} dev + {num_test} test sentences"
    )
    train_pool, dev_sentences, test_sentences = select_eval_sentences(
        pool, num_dev, num_test, args.min_train_char_count, rng
    )
    train_sentences = deal_train_sentences(
        train_pool, args.num_train_speakers * args.train_utts_per_speaker, rng
    )
    speakers = make_speakers(
        args.num_train_speakers, args.num_dev_speakers, args.num_test_speakers,
        args.eval_voices, rng, args.speed_range, args.pitch_range,
    )

    sentences_for_split = {"train": train_sentences, "dev": dev_sentences, "test": test_sentences}
    per_speaker = {
        "train": args.train_utts_per_speaker,
        "dev": args.eval_utts_per_speaker,
        "test": args.eval_utts_per_speaker,
    }
    planned: list[tuple[ManifestRow, SynthesisJob]] = []
    speaker_index_in_split: collections.Counter = collections.Counter()
    for speaker in speakers:
        k = speaker_index_in_split[speaker.split]
        speaker_index_in_split[speaker.split] += 1
        count = per_speaker[speaker.split]
        chunk = sentences_for_split[speaker.split][k * count:(k + 1) * count]
        for number, record in enumerate(chunk, 1):
            utt_id = f"{UTT_PREFIX}{speaker.speaker_id}W{number:04d}"
            rel_wav = f"wav/{speaker.split}/{speaker.speaker_id}/{utt_id}.wav"
            row = ManifestRow(
                utt_id=utt_id, split=speaker.split, speaker=speaker.speaker_id,
                sentence_id=record.sentence_id, hsk_level=record.hsk_level,
                text=record.text, words=" ".join(record.words),
                pinyin=" ".join(record.pinyin), wav=rel_wav, duration_s=0.0,
            )
            job = SynthesisJob(
                utt_id=utt_id, wav_path=str(corpus_root / rel_wav),
                espeak_text=espeak_input(record), variant=speaker.variant,
                speed_wpm=speaker.speed_wpm, pitch=speaker.pitch,
            )
            planned.append((row, job))

    print(f"synthesising {len(planned)} utterances with {args.nj} process(es) ({espeak_version})")
    synth_started = time.time()
    durations = synthesize_all([job for _, job in planned], args.nj)
    synth_seconds = time.time() - synth_started

    rows = [
        ManifestRow(**{**asdict(row), "duration_s": round(durations[row.utt_id], 4)})
        for row, _ in planned
    ]
    rows.sort(key=lambda r: r.utt_id)
    write_manifest(corpus_root / MANIFEST_NAME, rows)
    atomic_write_text(
        corpus_root / SPEAKERS_NAME,
        "speaker\tsplit\tvariant\tspeed_wpm\tpitch\n"
        + "".join(f"{s.speaker_id}\t{s.split}\t{s.variant}\t{s.speed_wpm}\t{s.pitch}\n" for s in speakers),
    )
    for split in SPLITS:
        texts = sorted({r.text for r in rows if r.split == split})
        atomic_write_text(corpus_root / f"sentences_{split}.txt", "".join(t + "\n" for t in texts))
    atomic_write_text(
        corpus_root / TRANSCRIPT_RELPATH, "".join(f"{r.utt_id} {r.words}\n" for r in rows)
    )

    stats = corpus_statistics(rows)
    stats["espeak_ng_version"] = espeak_version
    stats["generation_config"] = config
    stats["sentence_pool"] = {"hsk_sentences": len(records), "pool": len(pool), "train_pool": len(train_pool)}
    stats["synthesis_seconds_this_run"] = round(synth_seconds, 1)
    atomic_write_json(corpus_root / STATS_NAME, stats)
    atomic_write_json(done_path, config)

    total_hours = sum(s["hours"] for s in stats["splits"].values())
    print(
        "done in {:.1f}s: ".format(time.time() - started)
        + ", ".join(f"{split} {stats['splits'][split]['utterances']} utts" for split in SPLITS)
        + f", {total_hours:.2f} h audio, {stats['char_inventory']['all_splits']} characters; "
        f"test coverage {stats['test_coverage']['token_pct_seen_ge5_in_train']}% tokens seen >=5x in train; "
        f"{stats['homophones']['test_sentences_needing_context']}/{len(test_sentences)} "
        "test sentences need context to resolve homophones"
    )
    return stats


def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    make_corpus(args)


if __name__ == "__main__":
    main()
