#!/usr/bin/env python3
"""Precompute frozen PLM states of a data directory's transcripts (an ESPnet scp).

    python -m espnet_gmot.bin.dump_plm_states --text data/train/text \\
        --plm bert-base-chinese --output_dir dump/plm_states/train

With ``--asr_config <training yaml>`` the teacher is read as that config's
``model_conf.plm_conf`` says (name, architecture, hidden layer, BOS, text
case, weight dtype), so the cache holds what training would compute; the
options below override single settings.

Writes ``<output_dir>/plm_states.scp``; train with it as the ``plm_states`` data
key (``--train_data_path_and_name_and_type <scp>,plm_states,kaldi_ark
--allow_variable_data_keys true``; ``npy`` instead of ``kaldi_ark`` with
``--dtype float16``: the last line it logs is the argument). Interrupted runs resume; a re-run after the
text changed computes only the new transcripts; a run with another ``--plm`` or
``--dtype`` than the cache was made with is refused. Identical transcripts
(speed-perturbed copies) share one stored entry.
"""

import argparse
import logging
import sys
from pathlib import Path

import yaml

from espnet_gmot.espnet.plm_cache import (
    DTYPES,
    PLMCacheError,
    data_path_argument,
    write_plm_cache,
)
from espnet_gmot.kaldi_data import DataDirError, disk_full_message, is_disk_full
from espnet_gmot.transfer.plm import ARCHITECTURES, TEXT_CASES, WEIGHT_DTYPES, PLMTeacher


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument(
        "--asr_config", type=Path,
        help="training yaml whose model_conf.plm_conf sets the teacher (the options below win)",
    )
    parser.add_argument(
        "--plm", help="Hugging Face hub name or local directory "
        "(default: --asr_config's plm_conf.name_or_path, else bert-base-chinese)",
    )
    parser.add_argument("--local_files_only", action="store_true", help="never try the hub")
    parser.add_argument("--architecture", choices=ARCHITECTURES, help="default: encoder")
    parser.add_argument(
        "--hidden_layer", type=int, help="hidden state to read (0: embeddings); default: -1, the last"
    )
    parser.add_argument(
        "--add_bos_token", type=str2bool,
        help="decoder-only teachers: prepend BOS (default: as the tokenizer does)",
    )
    parser.add_argument("--text_case", choices=TEXT_CASES, help="default: keep")
    parser.add_argument(
        "--plm_dtype", choices=WEIGHT_DTYPES,
        help="precision of the teacher's weights, plm_conf.dtype (default: float32); "
        "not the storage --dtype",
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--shard_size", type=int, default=2000, help="utterances per shard")
    parser.add_argument(
        "--dtype", default="float32", choices=DTYPES,
        help="storage dtype; float16 halves the size, the model reads it as float32",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--log_level", default="INFO")
    return parser


def str2bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{value!r}: give true or false")
    return value.lower() == "true"


def teacher_settings(args: argparse.Namespace) -> dict:
    """PLMTeacher arguments: --asr_config's plm_conf, updated by the options given."""
    settings = {}
    if args.asr_config is not None:
        if not args.asr_config.is_file():
            sys.exit(f"--asr_config {args.asr_config}: no such file (give a training yaml)")
        with open(args.asr_config, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        if config.get("model") != "gmot":
            sys.exit(f"--asr_config {args.asr_config} has model: {config.get('model')}, "
                     f"which uses no PLM (give a model: gmot config)")
        settings.update((config.get("model_conf") or {}).get("plm_conf") or {})
    given = dict(
        name_or_path=args.plm, architecture=args.architecture, hidden_layer=args.hidden_layer,
        add_bos_token=args.add_bos_token, text_case=args.text_case, dtype=args.plm_dtype,
    )
    settings.update((key, value) for key, value in given.items() if value is not None)
    settings["local_files_only"] = args.local_files_only or settings.get("local_files_only", False)
    return settings


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if not args.text.is_file():
        sys.exit(f"--text {args.text}: no such file (give a data directory's text file)")
    try:
        teacher = PLMTeacher(**teacher_settings(args), setting="--plm", key_prefix="--")
    except (ValueError, TypeError) as err:  # TypeError: a plm_conf key PLMTeacher lacks
        sys.exit(str(err))
    try:
        scp = write_plm_cache(
            args.text, args.output_dir, teacher, batch_size=args.batch_size,
            shard_size=args.shard_size, device=args.device, dtype=args.dtype,
        )
    except (PLMCacheError, DataDirError, OSError, ValueError) as err:
        # ValueError: a teacher setting the loaded model refuses (its layer count, BOS)
        if is_disk_full(err):
            sys.exit(disk_full_message(
                err, args.output_dir, "it resumes from the states already written"))
        sys.exit(str(err))
    logging.info(f"wrote {scp}; train with {data_path_argument(scp)}")


if __name__ == "__main__":
    main()
