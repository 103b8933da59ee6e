"""Precomputed PLM states as an ESPnet data key (``plm_states``).

Training reads them with::

    --train_data_path_and_name_and_type dump/plm_states/train/plm_states.scp,plm_states,kaldi_ark
    --allow_variable_data_keys true

(``npy`` instead of ``kaldi_ark`` for a float16 cache: :data:`DATA_TYPES`;
``dump_plm_states`` prints the argument, and training refuses the wrong type.)

Layout of a cache directory (:func:`write_plm_cache`):

- ``plm_cache.json``: what the states were made from (the PLM's name, a SHA-256
  of its weights, config, vocabulary and reading, its hidden size) and the
  storage dtype; ``plm_reading`` (architecture, hidden layer, BOS, text case,
  the teacher's weight dtype) unless the states are a float32 encoder's last
  layer of the text as it is.
  A later run with another PLM or dtype is refused, so one cache never mixes two.
- ``shards/states.<k>.ark|scp`` (float32): one entry per *distinct transcript*,
  keyed by the transcript's SHA-256. Speed-perturbed copies (``sp0.9-``, ``sp1.1-``) and
  repeated sentences share one entry, and an utterance whose text changed maps
  to a new key, so a stale state is never reused. A shard counts only once its
  scp is renamed into place (after its ark is complete): an interrupted run
  resumes and never leaves a half-valid cache.
- ``states/<sha256>.npy`` (float16): the same entries, one numpy file each,
  renamed into place once complete.
- ``plm_states.scp``: every utterance id -> its entry (absolute ark path and
  offset, or .npy path; several ids may share one entry), what ESPnet's loader
  reads from any working directory.
- ``transcripts.sha256``: the fingerprint of each utterance's transcript, checked
  before training against the data's ``text``.
"""

import fcntl
import hashlib
import json
import logging
import os
import shlex
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import kaldiio
import numpy as np
import torch

from espnet_gmot.atomic import atomic_write_text
from espnet_gmot.kaldi_data import DataDirError, read_kaldi_map, read_text, write_kaldi_map
from espnet_gmot.transfer.plm import PLMTeacher

CACHE_SCP = "plm_states.scp"
DATA_KEY = "plm_states"
MANIFEST = "plm_cache.json"
TRANSCRIPT_FINGERPRINTS = "transcripts.sha256"
FORMAT_VERSION = 2
DTYPES = ("float32", "float16")
# The ESPnet data type that reads a cache of each storage dtype. Kaldi's binary
# matrices have no float16, and from ESPnet 202611 on the kaldi_ark loader reads
# Kaldi's own matrices only (not kaldiio's numpy entries in an ark), so float16
# states are stored as one .npy file per transcript: ESPnet's ``npy`` type, read
# the same way by every release.
DATA_TYPES = {"float32": "kaldi_ark", "float16": "npy"}


class PLMCacheError(Exception):
    """A cache that does not match the data or the PLM; the message says what to run."""


def read_transcripts(path: Path) -> Dict[str, str]:
    """Kaldi ``text`` (an empty transcript is allowed), refusing a file without utterances."""
    transcripts = read_text(path)
    if not transcripts:
        raise DataDirError(f"{path} has no utterances")
    return transcripts


def transcript_fingerprint(transcript: str) -> str:
    return hashlib.sha256(transcript.encode("utf-8")).hexdigest()


def reading_options(reading: Optional[dict]) -> str:
    """``dump_plm_states`` options that read a teacher as a manifest's
    ``plm_reading`` records (none for the last layer of an encoder)."""
    if not reading:
        return ""
    options = [
        f"--architecture {reading['architecture']}",
        f"--hidden_layer {reading['hidden_layer']}",
        f"--text_case {reading['text_case']}",
    ]
    if reading["architecture"] != "encoder":
        options.append(f"--add_bos_token {str(reading['bos']).lower()}")
    if reading.get("dtype", "float32") != "float32":  # absent: recorded before it was an option
        options.append(f"--plm_dtype {reading['dtype']}")
    return " " + " ".join(options)


def dump_command(
    text_path, output_dir, plm: str, dtype: str = "float32", reading: Optional[dict] = None
) -> str:
    """The command that makes or resumes a cache, for error messages."""
    command = (
        f"python -m espnet_gmot.bin.dump_plm_states --text {shlex.quote(str(text_path))} "
        f"--plm {shlex.quote(str(plm))} --output_dir {shlex.quote(str(output_dir))}"
    )
    return command + reading_options(reading) + (f" --dtype {dtype}" if dtype != "float32" else "")


def read_manifest(output_dir: Path) -> Optional[dict]:
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _check_or_write_manifest(output_dir: Path, wanted: dict, text_path: Path) -> None:
    """Refuse a cache made from another PLM or dtype, or one that records nothing."""
    found = read_manifest(output_dir)
    if found is None:
        old_files = [output_dir / "plm", output_dir / CACHE_SCP, *output_dir.glob("shards/*.scp")]
        if any(p.exists() for p in old_files):
            raise PLMCacheError(
                f"{output_dir} holds a PLM-state cache without {MANIFEST} (written by an "
                f"older espnet-gmot), so which PLM and transcripts made it is unknown. "
                f"Remove it (rm -r {shlex.quote(str(output_dir))}) and run "
                f"`{dump_command(text_path, output_dir, wanted['plm'], wanted['dtype'], wanted.get('plm_reading'))}`."
            )
        atomic_write_text(output_dir / MANIFEST, json.dumps(wanted, indent=2) + "\n")
        return
    # The name may differ (a hub name vs. its local copy) when the weights agree.
    if found.get("dtype") == wanted["dtype"] and cache_data_type(found) != wanted["data_type"]:
        raise PLMCacheError(
            f"The {found.get('dtype')} PLM-state cache {output_dir} was written by an earlier "
            f"espnet-gmot as numpy entries in a Kaldi ark, which ESPnet 202611's kaldi_ark "
            f"loader cannot read; {found.get('dtype')} caches are now {wanted['data_type']} "
            f"files. Nothing was written. Remove it (rm -r {shlex.quote(str(output_dir))}) "
            f"and run `{dump_command(text_path, output_dir, wanted['plm'], wanted['dtype'], wanted.get('plm_reading'))}`."
        )
    differing = [
        key for key in ("format", "plm_fingerprint", "hidden_size", "dtype")
        if found.get(key) != wanted[key]
    ]
    if differing:
        def shown(value):  # a fingerprint's first 12 digits identify it well enough to read
            return repr(value[:12] + "...") if isinstance(value, str) and len(value) == 64 else repr(value)

        if found.get("plm_reading") != wanted.get("plm_reading"):
            differing.append("plm_reading")
        described = ", ".join(
            f"{key} {shown(found.get(key))} there, {shown(wanted.get(key))} now"
            for key in differing
        )
        if found.get("plm_reading") and "dtype" not in found["plm_reading"]:
            # Recorded before plm_conf.dtype existed, when the teacher was held in
            # whatever dtype transformers loaded: no setting gives that fingerprint.
            resume = (
                "That cache records no teacher dtype (an espnet-gmot before "
                "plm_conf.dtype wrote it), so no run resumes or extends it; "
            )
        else:
            resume = (
                f"To resume or extend that cache run `{dump_command(text_path, output_dir, found.get('plm'), found.get('dtype', 'float32'), found.get('plm_reading'))}`; "
            )
        raise PLMCacheError(
            f"The PLM-state cache {output_dir} was made from --plm {found.get('plm')!r} "
            f"(--dtype {found.get('dtype')}), not from this run's --plm {wanted['plm']!r} "
            f"(--dtype {wanted['dtype']}): {described}. Nothing was written. {resume}"
            f"for this PLM give another --output_dir (or remove {output_dir} first)."
        )


def cache_data_type(manifest: dict) -> str:
    """The ESPnet data type of a cache with this manifest (one written before
    the manifest named it stored float32 states in Kaldi arks, or float16 ones
    as kaldiio numpy entries in arks, which ESPnet 202611 cannot read)."""
    return manifest.get("data_type", "kaldi_ark")


def data_path_argument(scp: Path, split: str = "train") -> str:
    """The asr_train argument that reads the cache whose scp this is."""
    data_type = cache_data_type(read_manifest(Path(scp).parent) or {})
    return f"--{split}_data_path_and_name_and_type {scp},{DATA_KEY},{data_type}"


def _stored_npy_entries(states_dir: Path) -> Dict[str, str]:
    """Transcript fingerprint -> absolute path of every finished ``.npy`` entry."""
    return {path.stem: str(path.resolve()) for path in sorted(states_dir.glob("*.npy"))}


def _stored_entries(shard_dir: Path) -> Dict[str, str]:
    """Transcript fingerprint -> ``ark:offset`` of every finished shard.

    The ark path is rebuilt from this directory's location, not taken from the
    shard's scp, so a moved cache stays readable after a re-run of the dump.
    """
    entries: Dict[str, str] = {}
    for scp_path in sorted(shard_dir.glob("states.*.scp")):
        ark_path = scp_path.with_suffix(".ark").resolve()
        for key, location in read_kaldi_map(scp_path).items():
            entries[key] = f"{ark_path}:{location.rsplit(':', 1)[1]}"
    return entries


def _free_shard_indices(shard_dir: Path) -> Iterator[int]:
    """Indices without a finished shard, lowest first.

    An ark without its scp is from an interrupted run: its index is reused and
    the ark overwritten, so no orphan is left behind.
    """
    index = 0
    while True:
        if not (shard_dir / f"states.{index}.scp").exists():
            yield index
        index += 1


def write_plm_cache(
    text_path: Path,
    output_dir: Path,
    teacher: PLMTeacher,
    batch_size: int = 32,
    shard_size: int = 2000,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Write the PLM states of every utterance of ``text_path``; returns the scp.

    Only transcripts not yet in the cache are computed. Raises
    :class:`PLMCacheError` when the cache was made from another PLM or dtype.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {DTYPES}")
    text_path = Path(text_path)
    transcripts = read_transcripts(text_path)
    output_dir = Path(output_dir)
    shard_dir = output_dir / "shards"
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PLMCacheError(
                f"Another dump_plm_states is writing {output_dir}; wait for it to finish."
            ) from None
        wanted = dict(
            format=FORMAT_VERSION,
            # A local directory absolutely, so that the refusal's command works anywhere.
            plm=(
                str(Path(teacher.name_or_path).resolve())
                if Path(teacher.name_or_path).is_dir() else str(teacher.name_or_path)
            ),
            plm_fingerprint=teacher.fingerprint(),
            plm_model_type=str(getattr(teacher.model.config, "model_type", "")),
            hidden_size=teacher.hidden_size,
            dtype=dtype,
            data_type=DATA_TYPES[dtype],
        )
        if not teacher.reads_last_encoder_layer():
            # For whoever reads the manifest and for the refusal's command; the
            # fingerprint covers the reading already. Absent for BERT's last
            # layer, as in every cache made before other readings existed.
            wanted["plm_reading"] = teacher.reading()
        _check_or_write_manifest(output_dir, wanted, text_path)

        fingerprints = {utt: transcript_fingerprint(t) for utt, t in transcripts.items()}
        as_npy = DATA_TYPES[dtype] == "npy"
        states_dir = output_dir / "states"
        (states_dir if as_npy else shard_dir).mkdir(exist_ok=True)
        for partial in states_dir.glob("*.npy.tmp"):  # an interrupted run's (we hold the lock)
            partial.unlink()

        def stored_entries():
            return _stored_npy_entries(states_dir) if as_npy else _stored_entries(shard_dir)

        stored = stored_entries()
        # One representative utterance per missing transcript; sorted by length so
        # that batches need little padding.
        missing: Dict[str, str] = {}
        for utt in sorted(transcripts):
            if fingerprints[utt] not in stored:
                missing.setdefault(fingerprints[utt], utt)
        todo = sorted(missing.items(), key=lambda item: (len(transcripts[item[1]]), item[0]))
        logging.info(
            f"{len(transcripts)} utterances, {len(set(fingerprints.values()))} distinct "
            f"transcripts, {len(todo)} to compute"
        )
        indices = _free_shard_indices(shard_dir)
        for start in range(0, len(todo), shard_size):
            shard = todo[start : start + shard_size]
            if as_npy:
                _write_npy_entries(
                    shard, transcripts, states_dir, teacher, batch_size,
                    torch.device(device), np.dtype(dtype),
                )
            else:
                index = next(indices)
                _write_shard(
                    shard, transcripts, shard_dir / f"states.{index}.ark",
                    shard_dir / f"states.{index}.scp", teacher, batch_size,
                    torch.device(device), np.dtype(dtype),
                )
            logging.info(f"{start + len(shard)}/{len(todo)} transcripts written")
        stored = stored_entries()

        merged = output_dir / CACHE_SCP
        write_kaldi_map(merged, [(utt, stored[fingerprints[utt]]) for utt in sorted(transcripts)])
        # After the scp: an interruption in between leaves fingerprints that the
        # training check finds stale, never a stale scp with fresh fingerprints.
        write_kaldi_map(
            output_dir / TRANSCRIPT_FINGERPRINTS,
            [(utt, fingerprints[utt]) for utt in sorted(transcripts)],
        )
    return merged


def _encoded(shard, transcripts, teacher, batch_size, device, dtype) -> Iterator[tuple]:
    """``(fingerprint, states)`` of each ``(fingerprint, representative utterance)``."""
    for start in range(0, len(shard), batch_size):
        batch = shard[start : start + batch_size]
        utts = [utt for _, utt in batch]
        states, lengths, _ = teacher.encode([transcripts[u] for u in utts], device, utt_ids=utts)
        for (key, _), state, length in zip(batch, states, lengths):
            yield key, state[: int(length)].cpu().numpy().astype(dtype)


def _write_shard(shard, transcripts, ark_path, scp_path, teacher, batch_size, device, dtype):
    """One Kaldi ark/scp shard of float32 entries."""
    tmp_scp = scp_path.with_name(scp_path.name + ".tmp")
    try:
        with kaldiio.WriteHelper(f"ark,scp:{ark_path},{tmp_scp}") as writer:
            for key, state in _encoded(shard, transcripts, teacher, batch_size, device, dtype):
                writer(key, state)
    except BaseException:
        # (a full disk, say): the unfinished shard goes, the finished ones stay
        ark_path.unlink(missing_ok=True)
        tmp_scp.unlink(missing_ok=True)
        raise
    os.replace(tmp_scp, scp_path)  # the shard counts as done only from here


def _write_npy_entries(shard, transcripts, states_dir, teacher, batch_size, device, dtype):
    """One ``.npy`` file per entry, each counting as done once renamed into place."""
    for key, state in _encoded(shard, transcripts, teacher, batch_size, device, dtype):
        tmp = states_dir / f"{key}.npy.tmp"
        try:
            with open(tmp, "wb") as f:
                np.save(f, state)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a full disk, say): finished entries stay
            raise
        os.replace(tmp, states_dir / f"{key}.npy")


def _cache_entries(args) -> Dict[str, List[tuple]]:
    """``{split: [(path, name, type), ...]}`` after ESPnet merged --config and the command line."""
    return {
        split: list(getattr(args, f"{split}_data_path_and_name_and_type", None) or [])
        for split in ("train", "valid")
    }


def check_plm_cache_covers_data(cmd: Iterable[str]) -> None:
    """Refuse to train when a ``plm_states`` cache lacks or mis-states an utterance.

    ``cmd`` are ESPnet ``asr_train`` arguments; they are parsed with ESPnet's own
    parser, so data paths given in the ``--config`` yaml count as well as those on
    the command line. Each cache is compared with the ``text`` entry of the same
    split: every utterance must be there with the transcript it was made from.
    Raises ``SystemExit`` naming what is wrong and the command that fixes it.
    """
    from espnet2.tasks.asr import ASRTask

    from espnet_gmot.espnet.model import CACHES_IN_USE_ENV
    from espnet_gmot.espnet.registry import register

    register()
    args = ASRTask.get_parser().parse_args(list(cmd))
    if getattr(args, "print_config", False):
        return
    in_use = []
    for split, entries in _cache_entries(args).items():
        caches = [(e[0], e[2]) for e in entries if e[1] == DATA_KEY]
        texts = [e[0] for e in entries if e[1] == "text"]
        for cache, data_type in caches:
            in_use.append(f"{split}: {cache}")
            manifest = read_manifest(Path(cache).parent)
            if manifest is not None and data_type != cache_data_type(manifest):
                raise SystemExit(
                    f"--{split}_data_path_and_name_and_type {cache},{DATA_KEY},{data_type}: "
                    f"that cache holds {manifest.get('dtype')} states, which ESPnet reads as "
                    f"{cache_data_type(manifest)}: write "
                    f"`{data_path_argument(Path(cache), split)}`."
                )
            if texts:
                try:
                    check_cache_against_text(Path(cache), Path(texts[0]))
                except (PLMCacheError, DataDirError) as err:
                    raise SystemExit(str(err)) from None
    if in_use:
        os.environ[CACHES_IN_USE_ENV] = ", ".join(in_use)


def check_cache_against_text(scp_path: Path, text_path: Path) -> None:
    """Every utterance of ``text_path`` in the cache, with an unchanged transcript."""
    output_dir = scp_path.parent
    manifest = read_manifest(output_dir) or {}
    fix = dump_command(
        text_path, output_dir, manifest.get("plm", "<the PLM>"), manifest.get("dtype", "float32"),
        manifest.get("plm_reading"),
    )
    if not scp_path.is_file():
        raise PLMCacheError(f"The PLM-state cache {scp_path} does not exist: run `{fix}`.")
    needed = read_transcripts(text_path)
    missing = sorted(set(needed) - set(read_kaldi_map(scp_path)))
    if missing:
        raise PLMCacheError(
            f"The PLM-state cache {scp_path} lacks {len(missing)} of the "
            f"{len(needed)} utterances of {text_path} ({_some(missing)}). Refusing to "
            f"train on it: run `{fix}` (it resumes)."
        )
    fingerprint_path = output_dir / TRANSCRIPT_FINGERPRINTS
    if not manifest or not fingerprint_path.is_file():
        raise PLMCacheError(
            f"The PLM-state cache {scp_path} records neither its PLM nor its transcripts "
            f"(no {MANIFEST} / {TRANSCRIPT_FINGERPRINTS}: an older espnet-gmot wrote it). "
            f"Remove {output_dir} and run `{fix}`."
        )
    recorded = read_kaldi_map(fingerprint_path)
    changed = sorted(
        utt for utt, transcript in needed.items()
        if recorded.get(utt) != transcript_fingerprint(transcript)
    )
    if changed:
        raise PLMCacheError(
            f"The transcripts of {len(changed)} utterances of {text_path} differ from "
            f"those the PLM-state cache {scp_path} was made from ({_some(changed)}). "
            f"Refusing to train on stale states: run `{fix}` (it computes only the "
            f"changed transcripts)."
        )


def _some(utts: Sequence[str]) -> str:
    return ", ".join(utts[:5]) + (" ..." if len(utts) > 5 else "")
