#!/usr/bin/env python3
"""AISHELL-1-layout corpus -> ESPnet/Kaldi data directories and a char token list.

Does what ESPnet's ``egs2/aishell/asr1/local/data.sh`` does after the
download, in Python:

* finds ``<corpus>/wav/{train,dev,test}/<speaker>/<utt>.wav``;
* keeps the utterances that have a line in
  ``<corpus>/transcript/aishell_transcript_v0.8.txt``;
* writes ``<data_dir>/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt}``,
  sorted by utterance id (C-locale order), with the spaces of the
  word-segmented transcript removed (one string of characters per utterance).
  The speaker is the wav's parent folder; AISHELL-style ids
  (``BAC009S0002W0122``) carry the speaker after a constant prefix, so
  sorting by utterance id also sorts by speaker, as Kaldi requires (checked);

and then, unless ``--token_list ''``, builds the character token list with
ESPnet's own tool exactly as ``asr.sh`` stage 5 does (``<blank>`` first,
``<unk>`` second, characters by decreasing train frequency, ``<sos/eos>``
last), and reports dev/test utterances whose text holds characters outside
that list (``oov_report.json`` beside the token list).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from espnet_gmot.kaldi_data import read_text, utt2spk_to_spk2utt, write_kaldi_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_common import SPLITS, atomic_write_json  # noqa: E402

TRANSCRIPT_RELPATH = Path("transcript") / "aishell_transcript_v0.8.txt"


def resolve_corpus_root(path: Path) -> Path:
    """Accept either the ``data_aishell`` folder or the folder holding it."""
    path = Path(path)
    for candidate in (path, path / "data_aishell"):
        if (candidate / TRANSCRIPT_RELPATH).is_file() and (candidate / "wav").is_dir():
            return candidate.resolve()
    raise SystemExit(
        f"{path} is not an AISHELL-1-layout corpus (expected wav/ and {TRANSCRIPT_RELPATH} "
        "in it or in its data_aishell/ folder); generate one with local/make_corpus.py"
    )


def read_transcripts(path: Path) -> dict[str, str]:
    """``utt -> text`` with the word-separating spaces removed (as aishell data.sh does)."""
    transcripts: dict[str, str] = {}
    for utt, words in read_text(path).items():
        if not words:
            print(f"warning: {path}: no transcript for {utt}; skipped")
            continue
        transcripts[utt] = "".join(words.split())
    return transcripts


def collect_split(corpus_root: Path, split: str, transcripts: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """Sorted ``(utt, speaker, wav path, text)`` of one split."""
    split_dir = corpus_root / "wav" / split
    if not split_dir.is_dir():
        raise SystemExit(f"missing split folder {split_dir}")
    entries = []
    without_text = 0
    for wav in sorted(split_dir.glob("*/*.wav")):
        utt = wav.stem
        if utt not in transcripts:
            without_text += 1
            continue
        entries.append((utt, wav.parent.name, str(wav), transcripts[utt]))
    if without_text:
        print(f"warning: {split}: {without_text} wav files have no transcript and were skipped")
    entries.sort()
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{split}: duplicate utterance ids under {split_dir}")
    if not entries:
        raise SystemExit(f"{split}: no utterances with transcripts under {split_dir}")
    return entries


def write_data_dir(out_dir: Path, entries: Sequence[tuple[str, str, str, str]]) -> None:
    """Write wav.scp, text, utt2spk and spk2utt (Kaldi conventions, sorted)."""
    by_speaker_order = sorted(entries, key=lambda e: (e[1], e[0]))
    if [e[0] for e in by_speaker_order] != [e[0] for e in entries]:
        raise SystemExit(
            f"{out_dir}: utterance ids do not sort in speaker order; Kaldi needs the "
            "speaker id as a prefix of the utterance id (or a constant prefix before it)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_kaldi_map(out_dir / "wav.scp", [(u, w) for u, _, w, _ in entries])
    write_kaldi_map(out_dir / "text", [(u, t) for u, _, _, t in entries])
    utt2spk = {u: s for u, s, _, _ in entries}
    write_kaldi_map(out_dir / "utt2spk", utt2spk)
    write_kaldi_map(out_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))


def make_token_list(train_text: Path, token_list: Path) -> list[str]:
    """Run ESPnet's tokenize_text as asr.sh stage 5 does for ``token_type=char``."""
    token_list.parent.mkdir(parents=True, exist_ok=True)
    tmp_output = token_list.with_name(token_list.name + ".tmp")
    command = [
        sys.executable, "-m", "espnet2.bin.tokenize_text",
        "--token_type", "char",
        "--input", str(train_text),
        "--output", str(tmp_output),
        "--non_linguistic_symbols", "none",
        "--field", "2-",
        "--cleaner", "none",
        "--g2p", "none",
        "--write_vocabulary", "true",
        "--add_symbol", "<blank>:0",
        "--add_symbol", "<unk>:1",
        "--add_symbol", "<sos/eos>:-1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(
            "espnet2.bin.tokenize_text failed (is ESPnet installed in this Python?):\n" + result.stderr
        )
    tmp_output.replace(token_list)
    return token_list.read_text(encoding="utf-8").split("\n")[:-1]


def oov_report(split_entries: dict[str, list], tokens: Sequence[str]) -> dict:
    """Per split: utterances with characters not in the token list."""
    known = set(tokens)
    report = {}
    for split, entries in split_entries.items():
        bad = {u: sorted({c for c in t if c not in known}) for u, _, _, t in entries}
        bad = {u: chars for u, chars in bad.items() if chars}
        report[split] = {
            "utterances": len(entries),
            "utterances_with_oov": len(bad),
            "oov_chars": sorted({c for chars in bad.values() for c in chars}),
            "examples": dict(list(bad.items())[:20]),
        }
    return report


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus_dir", type=Path, required=True,
                        help="the data_aishell folder (or the folder that holds it)")
    parser.add_argument("--data_dir", type=Path, default=Path("data"),
                        help="output: <data_dir>/{train,dev,test}")
    parser.add_argument("--token_list", type=str, default="data/zh_token_list/char/tokens.txt",
                        help="char token list to write ('' to skip)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS),
                        help="splits to prepare; the first one builds the token list")
    return parser


def prepare_data(args: argparse.Namespace) -> dict:
    """Write the data dirs (and token list); returns a summary."""
    corpus_root = resolve_corpus_root(args.corpus_dir)
    transcripts = read_transcripts(corpus_root / TRANSCRIPT_RELPATH)
    split_entries = {split: collect_split(corpus_root, split, transcripts) for split in args.splits}
    all_speakers: dict[str, str] = {}
    for split, entries in split_entries.items():
        for _, speaker, _, _ in entries:
            if all_speakers.setdefault(speaker, split) != split:
                raise SystemExit(f"speaker {speaker} appears in both {all_speakers[speaker]} and {split}")
        write_data_dir(Path(args.data_dir) / split, entries)
        print(f"{split}: {len(entries)} utterances, "
              f"{len({e[1] for e in entries})} speakers -> {Path(args.data_dir) / split}")
    summary: dict = {split: len(entries) for split, entries in split_entries.items()}
    if args.token_list:
        token_list = Path(args.token_list)
        train_split = args.splits[0]
        tokens = make_token_list(Path(args.data_dir) / train_split / "text", token_list)
        report = oov_report({s: e for s, e in split_entries.items() if s != train_split}, tokens)
        atomic_write_json(token_list.parent / "oov_report.json", report)
        print(f"token list: {len(tokens)} entries -> {token_list}")
        for split, info in report.items():
            print(f"{split}: {info['utterances_with_oov']}/{info['utterances']} utterances hold "
                  f"characters outside the token list {''.join(info['oov_chars'])}")
        summary["tokens"] = len(tokens)
        summary["oov"] = report
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    prepare_data(args)


if __name__ == "__main__":
    main()
