#!/usr/bin/env python3
"""Dump Kaldi-compatible fbank+pitch features of a Kaldi data directory.

Pure-Python replacement for stage 3 of ESPnet's ``egs2/TEMPLATE/asr1/asr.sh``
with ``--feats_type fbank_pitch``, which needs Kaldi::

    utils/copy_data_dir.sh data/${dset} ${data_feats}/${dset}
    steps/make_fbank_pitch.sh --nj ${nj} ${data_feats}/${dset}
    utils/fix_data_dir.sh ${data_feats}/${dset}
    scripts/feats/feat_to_shape.sh ... feats.scp feats_shape
    echo 83 > feats_dim; echo fbank_pitch > feats_type

The output directory gets the input's files (``text``, ``utt2spk``,
``spk2utt``, ``wav.scp``, ``segments``, ...), ``data/raw_fbank_pitch_<name>.<job>.{ark,scp}``,
``feats.scp``, ``utt2num_frames``, ``feats_shape``, ``feats_dim`` and
``feats_type``.  It is written to a hidden staging directory beside it
(``.<name>.tmp-<pid>-*``) and renamed into place only when everything
succeeded, so an existing output survives any error; staging directories
left by a killed run are removed by the next run on the same output.
Utterances too short for one frame are skipped with a warning, as Kaldi's
``compute-fbank-feats`` does. Reading the data directory, its segments and
audio, and the staging are :mod:`espnet_gmot.kaldi_data`'s; the features are
:mod:`espnet_gmot.features`'.

Example::

    python -m espnet_gmot.bin.dump_fbank_pitch --nj 8 \\
        data/train dump/fbank_pitch/org/train
"""

import argparse
import logging
import multiprocessing
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from espnet2.utils.types import str2bool

from espnet_gmot.features.fbank import FbankPitchConfig, compute_fbank_pitch
from espnet_gmot.kaldi_data import (
    DataDirError,
    Utterance,
    copy_data_files,
    disk_full_message,
    filter_utterance_files,
    is_disk_full,
    list_utterances,
    read_audio,
    split_evenly,
    staged_directory,
    write_kaldi_map,
)

FEATS_TYPE = "fbank_pitch"
# Files we (re)generate; everything else at the top level is copied.
GENERATED_FILES = (
    "feats.scp",
    "feats_shape",
    "feats_dim",
    "feats_type",
    "utt2num_frames",
    "cmvn.scp",
)


def dump_job(
    job: int,
    utterances: Sequence[Utterance],
    ark_path: str,
    final_ark_path: str,
    fs: int,
    resample: bool,
    channel: int,
    config: FbankPitchConfig,
    compression_method: Optional[int],
) -> List[Tuple[str, str, int]]:
    """Extract one job's utterances into ``ark_path``.

    Returns ``(utt_id, scp_value, num_frames)`` per written utterance; the scp
    values point at ``final_ark_path`` (where the ark will live after the
    output directory is renamed into place).
    """
    import kaldiio

    records = []
    with open(ark_path, "wb") as ark:
        for utterance in utterances:
            utt_id, path, _ = utterance
            samples = read_audio(utterance, fs, resample, channel)
            if samples is None:
                continue
            # Checked before extraction: the pitch tracker needs a frame.
            if config.num_frames(len(samples), fs) == 0:
                logging.warning(
                    "Utterance %s (%s) has %d samples, too few for one %g ms frame; "
                    "skipping it.", utt_id, path, len(samples), config.frame_length
                )
                continue
            try:
                features = compute_fbank_pitch(samples, fs, config)
            except Exception as exc:
                raise DataDirError(
                    f"Cannot compute fbank+pitch of utterance {utt_id!r} ({path}, "
                    f"{len(samples)} samples): {type(exc).__name__}: {exc}"
                ) from exc
            if len(features) == 0:
                logging.warning(
                    "Utterance %s (%s) is too short to give any frame; skipping it.", utt_id, path
                )
                continue
            # Kaldi scp offsets point just past "<key> " in the ark; the ark's
            # final path differs from where it is written, so the scp is ours.
            offset = ark.tell() + len(utt_id.encode("utf-8")) + 1
            kaldiio.save_ark(ark, {utt_id: features}, compression_method=compression_method)
            records.append((utt_id, f"{final_ark_path}:{offset}", len(features)))
    logging.info("Job %d: wrote %d utterances to %s", job, len(records), final_ark_path)
    return records


def _dump_job_star(arguments: tuple) -> List[Tuple[str, str, int]]:
    return dump_job(*arguments)


def dump_fbank_pitch(
    data_dir: Path,
    output_dir: Path,
    nj: int,
    fs: int,
    resample: bool,
    channel: int,
    config: FbankPitchConfig,
    compression_method: Optional[int],
) -> int:
    """Write the dump directory atomically; returns the number of utterances."""
    data_dir, output_dir = Path(data_dir), Path(output_dir).absolute()
    utterances = list_utterances(data_dir)
    name = output_dir.name
    with staged_directory(output_dir) as staging:
        copy_data_files(data_dir, staging, skip=GENERATED_FILES)
        (staging / "data").mkdir()
        tasks = []
        for job, chunk in enumerate(split_evenly(utterances, nj), 1):
            ark_name = f"raw_fbank_pitch_{name}.{job}.ark"
            tasks.append(
                (
                    job,
                    chunk,
                    str(staging / "data" / ark_name),
                    str(output_dir / "data" / ark_name),
                    fs,
                    resample,
                    channel,
                    config,
                    compression_method,
                )
            )
        if len(tasks) > 1:
            with multiprocessing.get_context("fork").Pool(len(tasks)) as pool:
                results = pool.map(_dump_job_star, tasks)
        else:
            results = [_dump_job_star(tasks[0])]

        for (job, *_), records in zip(tasks, results):
            write_kaldi_map(
                staging / "data" / f"raw_fbank_pitch_{name}.{job}.scp",
                [(utt, value) for utt, value, _ in records],
            )
        records = sorted((r for job_records in results for r in job_records), key=lambda r: r[0])
        if not records:
            raise DataDirError(
                f"No utterance of {data_dir} produced any feature frame (all too short or "
                "skipped segments; see the warnings above)."
            )
        dim = config.feature_dim
        write_kaldi_map(staging / "feats.scp", [(utt, value) for utt, value, _ in records])
        write_kaldi_map(staging / "utt2num_frames", [(utt, n) for utt, _, n in records])
        write_kaldi_map(staging / "feats_shape", [(utt, f"{n},{dim}") for utt, _, n in records])
        (staging / "feats_dim").write_text(f"{dim}\n")
        (staging / "feats_type").write_text(f"{FEATS_TYPE}\n")
        if len(records) != len(utterances):
            filter_utterance_files(
                staging, [r[0] for r in records], segmented=(data_dir / "segments").is_file()
            )
    return len(records)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Dump Kaldi-compatible fbank+pitch features (80 mel bins + 3 pitch "
        "features) of a Kaldi data directory in ESPnet's dump layout, without Kaldi.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--log_level",
        type=lambda x: x.upper(),
        default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"),
        help="The verbose level of logging",
    )
    parser.add_argument("data_dir", type=Path, help="Input Kaldi data directory")
    parser.add_argument("output_dir", type=Path, help="Output dump directory")
    parser.add_argument("--nj", type=int, default=1, help="Number of parallel jobs")
    parser.add_argument(
        "--fs", type=int, default=16000, help="Expected sampling rate (--sample-frequency)"
    )
    parser.add_argument(
        "--resample",
        type=str2bool,
        default=False,
        help="Resample audio whose rate differs from --fs instead of failing",
    )
    parser.add_argument(
        "--channel", type=int, default=-1, help="Channel to use; -1 requires mono audio"
    )
    parser.add_argument("--num_mel_bins", type=int, default=80, help="--num-mel-bins")
    parser.add_argument(
        "--dither",
        type=float,
        default=0.0,
        help="--dither of compute-fbank-feats (Kaldi's default is 1.0; 0 is deterministic)",
    )
    parser.add_argument(
        "--delta_pitch_noise_stddev",
        type=float,
        default=0.005,
        help="--delta-pitch-noise-stddev of process-kaldi-pitch-feats (0: no noise)",
    )
    parser.add_argument(
        "--srand",
        type=int,
        default=0,
        help="--srand of process-kaldi-pitch-feats; restarted for every utterance",
    )
    parser.add_argument(
        "--compress",
        type=str2bool,
        default=False,
        help="Store Kaldi compressed matrices (copy-feats --compress=true); lossy",
    )
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    config = FbankPitchConfig(
        num_mel_bins=args.num_mel_bins,
        dither=args.dither,
        process_options={
            "delta_pitch_noise_stddev": args.delta_pitch_noise_stddev,
            "srand": args.srand,
        },
    )
    try:
        count = dump_fbank_pitch(
            args.data_dir,
            args.output_dir,
            nj=args.nj,
            fs=args.fs,
            resample=args.resample,
            channel=args.channel,
            config=config,
            compression_method=1 if args.compress else None,
        )
    except DataDirError as exc:
        logging.error("%s", exc)
        sys.exit(1)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # the staging directory is gone; an earlier output was never touched
        logging.error("%s", disk_full_message(
            exc, args.output_dir, f"the previous {args.output_dir}, if any, is unchanged "
            "and nothing partial is left beside it"))
        sys.exit(1)
    logging.info("Dumped %d utterances to %s", count, args.output_dir)


if __name__ == "__main__":
    main()
