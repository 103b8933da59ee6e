"""Shared helpers for the synthetic Mandarin corpus recipe scripts.

Used by ``make_corpus.py`` (writes the manifest), ``train_teacher_plm.py``
(reads it to exclude dev/test sentences from pretraining) and
``prepare_data.py``.  Kept light (the standard library and
``espnet_gmot.atomic``, whose atomic writes every script uses) so that every
script can import it cheaply.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable

from espnet_gmot.atomic import atomic_write_text

# CJK Unified Ideographs (basic block) plus Extension A.  Everything the
# corpus speaks and the teacher PLM learns is restricted to these characters.
HANZI_PATTERN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")

MANIFEST_NAME = "manifest.tsv"
SPEAKERS_NAME = "speakers.tsv"
STATS_NAME = "corpus_stats.json"
SPLITS = ("train", "dev", "test")


def hanzi_only(text: str) -> str:
    """Return ``text`` with everything except Chinese characters removed."""
    return "".join(HANZI_PATTERN.findall(text))


def is_all_hanzi(text: str) -> bool:
    """True if ``text`` is non-empty and consists only of Chinese characters."""
    return bool(text) and len(HANZI_PATTERN.findall(text)) == len(text)


def atomic_write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as pretty, key-sorted UTF-8 JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class ManifestRow:
    """One utterance of the generated corpus.

    ``text`` is the Chinese-character-only transcript (no spaces, no
    punctuation); ``words`` is the same text word-segmented with single
    spaces (AISHELL transcript style); ``pinyin`` holds one numbered-tone
    syllable per character, space separated (what espeak-ng was fed, apart
    from pause commas).
    """

    utt_id: str
    split: str
    speaker: str
    sentence_id: str
    hsk_level: int
    text: str
    words: str
    pinyin: str
    wav: str  # path relative to the data_aishell root
    duration_s: float


MANIFEST_FIELDS = [f.name for f in fields(ManifestRow)]


def write_manifest(path: Path, rows: Iterable[ManifestRow]) -> None:
    """Write the manifest as a tab-separated file with a header line."""
    lines = ["\t".join(MANIFEST_FIELDS)]
    for row in rows:
        values = []
        for name in MANIFEST_FIELDS:
            value = getattr(row, name)
            values.append(f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append("\t".join(values))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read a manifest written by :func:`write_manifest`.

    Raises ``FileNotFoundError``/``ValueError`` naming the file when it is
    missing or malformed, so callers can tell the user to re-run
    ``make_corpus.py``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus manifest not found: {path} (run local/make_corpus.py first)"
        )
    rows: list[ManifestRow] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames != MANIFEST_FIELDS:
            raise ValueError(
                f"{path}: unexpected header {reader.fieldnames}; expected {MANIFEST_FIELDS}. "
                "Regenerate it with local/make_corpus.py."
            )
        for record in reader:
            rows.append(
                ManifestRow(
                    utt_id=record["utt_id"],
                    split=record["split"],
                    speaker=record["speaker"],
                    sentence_id=record["sentence_id"],
                    hsk_level=int(record["hsk_level"]),
                    text=record["text"],
                    words=record["words"],
                    pinyin=record["pinyin"],
                    wav=record["wav"],
                    duration_s=float(record["duration_s"]),
                )
            )
    return rows


def chars_by_syllable(rows: Iterable[ManifestRow]) -> dict[str, set[str]]:
    """Toned syllable -> the characters that stand for it anywhere in the corpus.

    The synthesiser speaks the syllable, so its audio is the same whatever
    character it stands for: a syllable with several characters is a
    homophone set that only linguistic context can resolve.
    """
    table: dict[str, set[str]] = {}
    for row in rows:
        for char, syllable in zip(row.text, row.pinyin.split()):
            table.setdefault(syllable, set()).add(char)
    return table
