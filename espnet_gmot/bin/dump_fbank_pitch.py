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
``compute-fbank-feats`` does.

Example::

    python -m espnet_gmot.bin.dump_fbank_pitch --nj 8 \\
        data/train dump/fbank_pitch/org/train
"""

import argparse
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from espnet_gmot.features.fbank import FbankPitchConfig, compute_fbank_pitch

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
# Kaldi's extract-segments defaults.
MIN_SEGMENT_LENGTH = 0.1
MAX_OVERSHOOT = 0.5


class DataDirError(Exception):
    """Invalid input data directory; the message says what to fix."""


def str2bool(value: str) -> bool:
    """``true``/``false`` command-line booleans, as in ``espnet2.utils.types``."""
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"Expected true/false, got {value!r}")


def read_kaldi_map(path: Path) -> "OrderedDict[str, str]":
    """Read a Kaldi ``<key> <value>`` file, rejecting duplicate keys."""
    entries: "OrderedDict[str, str]" = OrderedDict()
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise DataDirError(f"{path}:{line_number}: expected '<key> <value>', got {line!r}")
            key, value = parts
            if key in entries:
                raise DataDirError(f"{path}:{line_number}: duplicate key {key!r}")
            entries[key] = value.strip()
    return entries


def check_wav_entry(key: str, value: str, wav_scp: Path) -> str:
    """Return the file path of a ``wav.scp`` entry or explain why it is unusable."""
    if value.endswith("|") or value.startswith("|"):
        raise DataDirError(
            f"{wav_scp}: entry {key!r} is a pipe command ({value!r}). dump_fbank_pitch reads "
            "plain audio files only: write the audio to files first (e.g. run "
            "scripts/audio/format_wav_scp.sh, or sox the command's output to a .wav) and "
            "point wav.scp at them."
        )
    if len(value.split()) != 1:
        raise DataDirError(
            f"{wav_scp}: entry {key!r} has a value with spaces ({value!r}); "
            "expected one file path."
        )
    path = Path(value)
    if not path.is_file():
        raise DataDirError(
            f"{wav_scp}: audio file for {key!r} not found: {value}. Fix the path in wav.scp "
            "(relative paths are resolved from the current directory)."
        )
    return value


def load_utterances(data_dir: Path) -> List[Tuple[str, str, Optional[Tuple[float, float]]]]:
    """List ``(utt_id, audio_path, (start, end) or None)`` of a data directory."""
    wav_scp = data_dir / "wav.scp"
    if not data_dir.is_dir():
        raise DataDirError(f"Data directory not found: {data_dir}")
    if not wav_scp.is_file():
        raise DataDirError(f"{wav_scp} not found: a Kaldi data directory needs wav.scp.")
    recordings = read_kaldi_map(wav_scp)
    if not recordings:
        raise DataDirError(f"{wav_scp} is empty: nothing to dump.")
    paths = {key: check_wav_entry(key, value, wav_scp) for key, value in recordings.items()}

    segments_file = data_dir / "segments"
    if not segments_file.is_file():
        return [(key, path, None) for key, path in paths.items()]
    utterances = []
    for segment_id, value in read_kaldi_map(segments_file).items():
        fields = value.split()
        if len(fields) not in (3, 4):
            raise DataDirError(
                f"{segments_file}: segment {segment_id!r} must be "
                f"'<segment-id> <recording-id> <start> <end>', got {value!r}"
            )
        recording = fields[0]
        if recording not in paths:
            raise DataDirError(
                f"{segments_file}: segment {segment_id!r} refers to recording {recording!r}, "
                f"which is not in {wav_scp}."
            )
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise DataDirError(
                f"{segments_file}: segment {segment_id!r} has non-numeric times {fields[1:3]}"
            ) from None
        utterances.append((segment_id, paths[recording], (start, end)))
    if not utterances:
        raise DataDirError(f"{segments_file} is empty: nothing to dump.")
    return utterances


def read_audio(
    utt_id: str,
    path: str,
    segment: Optional[Tuple[float, float]],
    fs: int,
    resample: bool,
    channel: int,
) -> Optional[np.ndarray]:
    """Audio of one utterance on 16-bit integer scale (Kaldi's convention).

    Returns ``None`` (with a warning) for segments Kaldi's
    ``extract-segments`` would skip.
    """
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises several error types
        raise DataDirError(f"Cannot read audio of {utt_id!r} from {path}: {exc}") from exc
    num_channels = data.shape[1]
    if channel >= num_channels or (channel < 0 and num_channels != 1):
        raise DataDirError(
            f"Audio of {utt_id!r} ({path}) has {num_channels} channels; pass --channel "
            "<index> to choose one (Kaldi's compute-fbank-feats --channel)."
        )
    samples = data[:, max(channel, 0)]
    if segment is not None:
        start, end = segment
        duration = len(samples) / rate
        if start < 0 or start > duration or end > duration + MAX_OVERSHOOT:
            logging.warning(
                "Segment %s [%s, %s] is outside %s (%.3f s); skipping it.",
                utt_id,
                start,
                end,
                path,
                duration,
            )
            return None
        if end < 0 or end > duration:
            end = duration
        if end - start < MIN_SEGMENT_LENGTH:
            logging.warning("Segment %s is too short; skipping it.", utt_id)
            return None
        first = int(np.float32(start) * np.float32(rate) + np.float32(0.5))
        last = min(int(np.float32(end) * np.float32(rate) + np.float32(0.5)), len(samples))
        samples = samples[first:last]
    if rate != fs:
        if not resample:
            raise DataDirError(
                f"Audio of {utt_id!r} ({path}) has sample rate {rate} Hz but --fs is {fs}. "
                f"Pass --fs {rate} if that is intended, or --resample true to resample to "
                f"{fs} Hz."
            )
        from math import gcd

        from scipy.signal import resample_poly

        common = gcd(int(rate), int(fs))
        samples = resample_poly(samples, int(fs) // common, int(rate) // common)
    return samples * 32768.0


def num_frames(num_samples: int, fs: int, config: FbankPitchConfig) -> int:
    """Frames Kaldi's framing gives ``num_samples`` samples (``NumFrames``)."""
    window = int(fs * 0.001 * config.frame_length)
    shift = int(fs * 0.001 * config.frame_shift)
    if config.snip_edges:
        return 0 if num_samples < window else 1 + (num_samples - window) // shift
    return (num_samples + shift // 2) // shift


def split_jobs(items: Sequence, num_jobs: int) -> List[Sequence]:
    """Contiguous, nearly equal chunks, like Kaldi's ``utils/split_scp.pl``."""
    num_jobs = max(1, min(num_jobs, len(items)))
    bounds = np.linspace(0, len(items), num_jobs + 1).round().astype(int)
    return [items[bounds[i] : bounds[i + 1]] for i in range(num_jobs)]


def dump_job(
    job: int,
    utterances: Sequence[Tuple[str, str, Optional[Tuple[float, float]]]],
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
        for utt_id, path, segment in utterances:
            samples = read_audio(utt_id, path, segment, fs, resample, channel)
            if samples is None:
                continue
            # Checked before extraction: the pitch tracker needs a frame.
            if num_frames(len(samples), fs, config) == 0:
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
            # Kaldi scp offsets point just past "<key> " in the ark.
            offset = ark.tell() + len(utt_id.encode("utf-8")) + 1
            kaldiio.save_ark(ark, {utt_id: features}, compression_method=compression_method)
            records.append((utt_id, f"{final_ark_path}:{offset}", len(features)))
    logging.info("Job %d: wrote %d utterances to %s", job, len(records), final_ark_path)
    return records


def _dump_job_star(arguments: tuple) -> List[Tuple[str, str, int]]:
    return dump_job(*arguments)


def write_lines(path: Path, lines: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def filter_utterance_files(directory: Path, kept: Sequence[str], segmented: bool) -> None:
    """Drop skipped utterances from utterance-keyed files (``fix_data_dir.sh``)."""
    kept_set = set(kept)
    utt_files = ["text", "utt2spk", "utt2dur", "utt2num_samples", "utt2lang", "utt2uniq"]
    utt_files += [p.name for p in directory.glob("text.*")]
    if segmented:
        utt_files.append("segments")
    else:
        utt_files.append("wav.scp")
    for name in utt_files:
        path = directory / name
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in handle if line.strip()]
        write_lines(path, [line for line in lines if line.split(maxsplit=1)[0] in kept_set])
    utt2spk = directory / "utt2spk"
    if utt2spk.is_file():
        spk2utt: "OrderedDict[str, List[str]]" = OrderedDict()
        for utt, spk in read_kaldi_map(utt2spk).items():
            spk2utt.setdefault(spk, []).append(utt)
        write_lines(
            directory / "spk2utt", [f"{spk} {' '.join(utts)}" for spk, utts in spk2utt.items()]
        )


_STAGING = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[^-]*")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(output_dir: Path) -> None:
    """Remove staging directories of ``output_dir`` whose writer is gone.

    ``.<name>.tmp-<pid>-*`` is an unfinished output; ``.<name>.old-<pid>-*`` a
    previous output being replaced, put back if the run died before the new
    output took its place. Directories of a live process are left alone.
    """
    if not output_dir.parent.is_dir():
        return
    for path in sorted(output_dir.parent.iterdir()):
        match = _STAGING.fullmatch(path.name)
        if not match or match["name"] != output_dir.name or not path.is_dir():
            continue
        pid = match["pid"]
        if pid is not None and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        if match["kind"] == "old" and not output_dir.exists():
            path.rename(output_dir)
            logging.warning("Restored %s from %s, left by an interrupted run", output_dir, path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            logging.warning("Removed %s, left by an interrupted run", path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    utterances = load_utterances(data_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(output_dir)
    pid = os.getpid()
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-{pid}-", dir=output_dir.parent))
    # mkdtemp makes it 0700; the output gets the permissions of a plain mkdir.
    staging.chmod(0o777 & ~_umask())
    try:
        for item in data_dir.iterdir():
            if item.is_file() and item.name not in GENERATED_FILES:
                shutil.copy2(item, staging / item.name)
        (staging / "data").mkdir()
        name = output_dir.name
        chunks = split_jobs(utterances, nj)
        tasks = []
        for job, chunk in enumerate(chunks, 1):
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
            write_lines(
                staging / "data" / f"raw_fbank_pitch_{name}.{job}.scp",
                [f"{utt} {value}" for utt, value, _ in records],
            )
        records = sorted((r for job_records in results for r in job_records), key=lambda r: r[0])
        if not records:
            raise DataDirError(
                f"No utterance of {data_dir} produced any feature frame (all too short or "
                "skipped segments; see the warnings above)."
            )
        dim = config.feature_dim
        write_lines(staging / "feats.scp", [f"{utt} {value}" for utt, value, _ in records])
        write_lines(staging / "utt2num_frames", [f"{utt} {n}" for utt, _, n in records])
        write_lines(staging / "feats_shape", [f"{utt} {n},{dim}" for utt, _, n in records])
        write_lines(staging / "feats_dim", [str(dim)])
        write_lines(staging / "feats_type", [FEATS_TYPE])
        if len(records) != len(utterances):
            filter_utterance_files(
                staging, [r[0] for r in records], segmented=(data_dir / "segments").is_file()
            )

        # Swap into place: the previous output is removed only after the new
        # one is complete.
        backup = None
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{name}.old-{pid}-", dir=output_dir.parent))
            backup.rmdir()
            output_dir.rename(backup)
        staging.rename(output_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
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
            "srand_seed": args.srand,
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
    logging.info("Dumped %d utterances to %s", count, args.output_dir)


if __name__ == "__main__":
    main()
