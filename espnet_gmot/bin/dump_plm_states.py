#!/usr/bin/env python3
"""Precompute frozen PLM states of a data directory's transcripts (an ESPnet scp).

    python -m espnet_gmot.bin.dump_plm_states --text data/train/text \\
        --plm bert-base-chinese --output_dir dump/plm_states/train

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

from espnet_gmot.espnet.plm_cache import (
    DTYPES,
    PLMCacheError,
    data_path_argument,
    write_plm_cache,
)
from espnet_gmot.kaldi_data import DataDirError, disk_full_message, is_disk_full
from espnet_gmot.transfer.plm import PLMTeacher


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--text", type=Path, required=True, help="Kaldi text file")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument(
        "--plm", default="bert-base-chinese", help="Hugging Face hub name or local directory"
    )
    parser.add_argument("--local_files_only", action="store_true", help="never try the hub")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--shard_size", type=int, default=2000, help="utterances per shard")
    parser.add_argument(
        "--dtype", default="float32", choices=DTYPES,
        help="storage dtype; float16 halves the size, the model reads it as float32",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--log_level", default="INFO")
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    if not args.text.is_file():
        sys.exit(f"--text {args.text}: no such file (give a data directory's text file)")
    teacher = PLMTeacher(args.plm, local_files_only=args.local_files_only, setting="--plm")
    try:
        scp = write_plm_cache(
            args.text, args.output_dir, teacher, batch_size=args.batch_size,
            shard_size=args.shard_size, device=args.device, dtype=args.dtype,
        )
    except (PLMCacheError, DataDirError, OSError) as err:
        if is_disk_full(err):
            sys.exit(disk_full_message(
                err, args.output_dir, "it resumes from the states already written"))
        sys.exit(str(err))
    logging.info(f"wrote {scp}; train with {data_path_argument(scp)}")


if __name__ == "__main__":
    main()
