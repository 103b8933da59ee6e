"""Kaldi data directories: ``<key> <value>`` files, segments, audio, atomic output.

A Kaldi data directory (https://kaldi-asr.org/doc/data_prep.html) holds
``text``, ``wav.scp``, ``utt2spk``, ``spk2utt``, ``segments``, ``feats.scp``,
``utt2num_frames``, ... : one ``<key> <value>`` entry per line, the key up to
the first whitespace, the value the rest of the line.  This module is the one
reader and writer of that format in espnet-gmot (feature dumping, the PLM-state
cache, the recipes and the tests), so that every file is parsed the same way
and every error names the file, the line and the key.

It also lists a directory's utterances (``wav.scp`` plus optional
``segments``), reads their audio as Kaldi's ``extract-segments`` does, filters
utterance-keyed files like ``utils/fix_data_dir.sh``, and writes an output
directory atomically: :func:`staged_directory` builds it beside its final place
and renames it in only when complete.
"""

import errno
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from espnet_gmot.atomic import atomic_write_text, process_alive

PathLike = Union[str, "os.PathLike[str]"]

# Kaldi's extract-segments defaults (--min-segment-length, --max-overshoot).
MIN_SEGMENT_LENGTH = 0.1
MAX_OVERSHOOT = 0.5
# Files keyed by utterance that fix_data_dir.sh keeps in step with the kept utterances.
UTTERANCE_FILES = ("text", "utt2spk", "utt2dur", "utt2num_samples", "utt2lang", "utt2uniq")


class DataDirError(ValueError):
    """Invalid Kaldi data directory or file; the message says what to fix."""


class Utterance(NamedTuple):
    """One utterance of a data directory: its audio file and, for a segment, its span."""

    utt_id: str
    audio_path: str
    segment: Optional[Tuple[float, float]]  # (start, end) in seconds; None: the whole file


# --------------------------------------------------------------------------
# <key> <value> files
# --------------------------------------------------------------------------
def _entries(path: Path) -> Iterator[Tuple[int, str, str, str]]:
    """``(line_number, line, key, value)`` of every non-blank line."""
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, *rest = line.split(maxsplit=1)
            yield line_number, line, key, rest[0].strip() if rest else ""


def read_kaldi_map(path: PathLike, *, allow_empty_values: bool = False) -> Dict[str, str]:
    """Read a Kaldi ``<key> <value>`` file into an ordered dict.

    Args:
        path: e.g. ``wav.scp``, ``utt2spk``, ``feats.scp``.
        allow_empty_values: Accept a line with a key only (its value is
            ``""``), as ``text`` allows an empty transcript.

    Raises:
        DataDirError: naming the file and line of a duplicate key or, unless
            ``allow_empty_values``, of a line without a value.
    """
    path = Path(path)
    entries: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    for line_number, line, key, value in _entries(path):
        if not value and not allow_empty_values:
            raise DataDirError(f"{path}:{line_number}: expected '<key> <value>', got {line!r}")
        if key in entries:
            raise DataDirError(
                f"{path}:{line_number}: duplicate key {key!r} (first on line {first_line[key]})"
            )
        entries[key] = value
        first_line[key] = line_number
    return entries


def read_text(path: PathLike) -> Dict[str, str]:
    """Kaldi ``text``: utterance id -> transcript (may be empty; inner spaces kept)."""
    return read_kaldi_map(path, allow_empty_values=True)


def write_kaldi_map(path: PathLike, entries: Union[Mapping[str, object], Iterable[Tuple[str, object]]]) -> None:
    """Write ``<key> <value>`` lines, atomically (a reader never sees half a file).

    ``entries`` is a mapping or ``(key, value)`` pairs, written in their order;
    a list value is joined by spaces (``spk2utt``).
    """
    path = Path(path)
    items = entries.items() if isinstance(entries, Mapping) else entries
    lines = []
    for key, value in items:
        if isinstance(value, (list, tuple)):
            value = " ".join(map(str, value))
        lines.append(f"{key} {value}\n" if value != "" else f"{key}\n")
    atomic_write_text(path, "".join(lines))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the device (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_message(err: OSError, output: PathLike, rerun: str) -> str:
    """What a dump tool says when the disk fills: which output, how much is free,
    and what a rerun does (``rerun``, e.g. "it resumes")."""
    output = Path(output).absolute()
    existing = next(p for p in (output, *output.parents) if p.exists())
    free_mib = shutil.disk_usage(existing).free / 2**20
    return (
        f"No space left on the device of {output} (while writing "
        f"{err.filename or 'it'}; {free_mib:.0f} MiB free there now). Free space or "
        f"choose another output directory, then run the same command again: {rerun}."
    )


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> Dict[str, List[str]]:
    """``spk2utt`` of an ``utt2spk`` map, speakers in order of first appearance
    (Kaldi's ``utils/utt2spk_to_spk2utt.pl``)."""
    spk2utt: Dict[str, List[str]] = {}
    for utt, spk in utt2spk.items():
        spk2utt.setdefault(spk, []).append(utt)
    return spk2utt


def split_evenly(items: Sequence, num_jobs: int) -> List[Sequence]:
    """Contiguous, nearly equal chunks, like Kaldi's ``utils/split_scp.pl``."""
    num_jobs = max(1, min(num_jobs, len(items)))
    bounds = np.linspace(0, len(items), num_jobs + 1).round().astype(int)
    return [items[bounds[i] : bounds[i + 1]] for i in range(num_jobs)]


# --------------------------------------------------------------------------
# Utterances and audio
# --------------------------------------------------------------------------
def _audio_file(key: str, value: str, wav_scp: Path) -> str:
    """The file path of a ``wav.scp`` entry, or why it is unusable."""
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
    if not Path(value).is_file():
        raise DataDirError(
            f"{wav_scp}: audio file for {key!r} not found: {value}. Fix the path in wav.scp "
            "(relative paths are resolved from the current directory)."
        )
    return value


def read_segments(segments_file: Path, recordings: Mapping[str, str]) -> Dict[str, Tuple[str, float, float]]:
    """``segments``: segment id -> ``(recording id, start, end)``, recordings checked
    against ``recordings`` (the ``wav.scp`` map)."""
    segments = {}
    for segment_id, value in read_kaldi_map(segments_file).items():
        fields = value.split()
        if len(fields) not in (3, 4):
            raise DataDirError(
                f"{segments_file}: segment {segment_id!r} must be "
                f"'<segment-id> <recording-id> <start> <end>', got {value!r}"
            )
        recording = fields[0]
        if recording not in recordings:
            raise DataDirError(
                f"{segments_file}: segment {segment_id!r} refers to recording {recording!r}, "
                f"which is not in {segments_file.parent / 'wav.scp'}."
            )
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            raise DataDirError(
                f"{segments_file}: segment {segment_id!r} has non-numeric times {fields[1:3]}"
            ) from None
        segments[segment_id] = (recording, start, end)
    return segments


def list_utterances(data_dir: PathLike) -> List[Utterance]:
    """The utterances of a data directory: ``wav.scp`` entries, or ``segments`` if present."""
    data_dir = Path(data_dir)
    wav_scp = data_dir / "wav.scp"
    if not data_dir.is_dir():
        raise DataDirError(f"Data directory not found: {data_dir}")
    if not wav_scp.is_file():
        raise DataDirError(f"{wav_scp} not found: a Kaldi data directory needs wav.scp.")
    recordings = read_kaldi_map(wav_scp)
    if not recordings:
        raise DataDirError(f"{wav_scp} is empty: nothing to dump.")
    paths = {key: _audio_file(key, value, wav_scp) for key, value in recordings.items()}

    segments_file = data_dir / "segments"
    if not segments_file.is_file():
        return [Utterance(key, path, None) for key, path in paths.items()]
    segments = read_segments(segments_file, paths)
    if not segments:
        raise DataDirError(f"{segments_file} is empty: nothing to dump.")
    return [
        Utterance(segment_id, paths[recording], (start, end))
        for segment_id, (recording, start, end) in segments.items()
    ]


def read_audio(
    utterance: Utterance, fs: int, resample: bool = False, channel: int = -1
) -> Optional[np.ndarray]:
    """Audio of one utterance on 16-bit integer scale (Kaldi's convention).

    Args:
        utterance: From :func:`list_utterances`.
        fs: The sample rate wanted.
        resample: Resample audio of another rate instead of failing.
        channel: The channel to use; -1 requires mono audio.

    Returns:
        The samples, or ``None`` (with a warning) for a segment Kaldi's
        ``extract-segments`` would skip; a segment overshooting the file's end
        by less than ``MAX_OVERSHOOT`` seconds is cut at the end, as there.
    """
    import soundfile

    utt_id, path, segment = utterance
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
                utt_id, start, end, path, duration,
            )
            return None
        if end < 0 or end > duration:
            end = duration
        if end - start < MIN_SEGMENT_LENGTH:
            logging.warning("Segment %s is too short; skipping it.", utt_id)
            return None
        # extract-segments rounds in single precision.
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


# --------------------------------------------------------------------------
# Copying and filtering data directories
# --------------------------------------------------------------------------
def copy_data_files(data_dir: PathLike, destination: PathLike, skip: Iterable[str] = ()) -> None:
    """Copy the top-level files of ``data_dir`` except ``skip`` (``utils/copy_data_dir.sh``)."""
    skip = set(skip)
    for item in Path(data_dir).iterdir():
        if item.is_file() and item.name not in skip:
            shutil.copy2(item, Path(destination) / item.name)


def filter_utterance_files(directory: PathLike, kept: Iterable[str], segmented: bool) -> None:
    """Drop the lines of utterances not in ``kept`` from the utterance-keyed files and
    rebuild ``spk2utt`` (``utils/fix_data_dir.sh``); other lines stay as they are."""
    directory = Path(directory)
    kept_set = set(kept)
    names = [*UTTERANCE_FILES, *(p.name for p in directory.glob("text.*"))]
    names.append("segments" if segmented else "wav.scp")
    for name in names:
        path = directory / name
        if path.is_file():
            lines = [line for _, line, key, _ in _entries(path) if key in kept_set]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if (directory / "utt2spk").is_file():
        spk2utt = utt2spk_to_spk2utt(read_kaldi_map(directory / "utt2spk"))
        write_kaldi_map(directory / "spk2utt", spk2utt)


# --------------------------------------------------------------------------
# Atomic output directories
# --------------------------------------------------------------------------
_STAGING = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[^-]*")


def clean_stale_staging(output_dir: PathLike) -> None:
    """Remove staging directories of ``output_dir`` whose writer is gone.

    ``.<name>.tmp-<pid>-*`` is an unfinished output; ``.<name>.old-<pid>-*`` a
    previous output being replaced, put back if the run died before the new
    output took its place. Directories of a live process are left alone.
    """
    output_dir = Path(output_dir)
    if not output_dir.parent.is_dir():
        return
    for path in sorted(output_dir.parent.iterdir()):
        match = _STAGING.fullmatch(path.name)
        if not match or match["name"] != output_dir.name or not path.is_dir():
            continue
        pid = match["pid"]
        if pid is not None and int(pid) != os.getpid() and process_alive(int(pid)):
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


@contextmanager
def staged_directory(output_dir: PathLike) -> Iterator[Path]:
    """Build ``output_dir`` in a hidden staging directory beside it.

    Yields the staging directory (``.<name>.tmp-<pid>-*``); when the block
    finishes, the previous ``output_dir`` (if any) is moved aside, the staging
    directory renamed into place and the previous one removed, so an existing
    output survives any error. On an error the staging directory is removed.
    Staging directories left by a killed run are cleaned up first
    (:func:`clean_stale_staging`).
    """
    output_dir = Path(output_dir).absolute()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(output_dir)
    prefix = f".{output_dir.name}"
    pid = os.getpid()
    staging = Path(tempfile.mkdtemp(prefix=f"{prefix}.tmp-{pid}-", dir=output_dir.parent))
    # mkdtemp makes it 0700; the output gets the permissions of a plain mkdir.
    staging.chmod(0o777 & ~_umask())
    try:
        yield staging
        backup = None
        if output_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f"{prefix}.old-{pid}-", dir=output_dir.parent))
            backup.rmdir()
            output_dir.rename(backup)
        staging.rename(output_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
