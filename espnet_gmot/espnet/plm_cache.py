"""Precomputed PLM states as an ESPnet data key (``plm_states``, kaldi_ark).

Training reads them with::

    --train_data_path_and_name_and_type dump/plm_states/train/plm_states.scp,plm_states,kaldi_ark
    --allow_variable_data_keys true

:func:`write_plm_cache` writes the cache for a data directory in shards; each
shard's scp is renamed into place only once its ark is complete, so an
interrupted run resumes where it stopped and never leaves a half-valid cache.
"""

import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import kaldiio
import numpy as np
import torch

from espnet_gmot.transfer.plm import PLMTeacher

CACHE_SCP = "plm_states.scp"
DATA_KEY = "plm_states"


def read_text(path: Path) -> Dict[str, str]:
    """Kaldi ``text``: ``utt_id transcript``; an empty transcript is allowed."""
    transcripts: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            utt, _, transcript = line.partition(" ")
            if utt in transcripts:
                raise ValueError(f"{path}:{number}: utterance {utt} appears twice")
            transcripts[utt] = transcript.strip()
    if not transcripts:
        raise ValueError(f"{path} has no utterances")
    return transcripts


def read_scp_keys(path: Path) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def write_plm_cache(
    text_path: Path,
    output_dir: Path,
    teacher: PLMTeacher,
    batch_size: int = 32,
    shard_size: int = 2000,
    device: str = "cpu",
) -> Path:
    """Write the PLM states of every utterance of ``text_path``; returns the scp.

    Finished shards (their scp exists with the expected utterances) are kept.
    """
    transcripts = read_text(Path(text_path))
    output_dir = Path(output_dir)
    shard_dir = output_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    utts = sorted(transcripts)
    shards = [utts[k : k + shard_size] for k in range(0, len(utts), shard_size)]
    scp_paths = []
    for index, shard in enumerate(shards):
        scp_path = shard_dir / f"{DATA_KEY}.{index}.scp"
        scp_paths.append(scp_path)
        if scp_path.exists() and read_scp_keys(scp_path) == shard:
            logging.info(f"shard {index + 1}/{len(shards)} already done")
            continue
        _write_shard(shard, transcripts, shard_dir / f"{DATA_KEY}.{index}.ark", scp_path,
                     teacher, batch_size, torch.device(device))
        logging.info(f"shard {index + 1}/{len(shards)} written ({len(shard)} utterances)")
    merged = output_dir / CACHE_SCP
    tmp = merged.with_name(merged.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for scp_path in scp_paths:
            out.write(scp_path.read_text(encoding="utf-8"))
    os.replace(tmp, merged)
    (output_dir / "plm").write_text(teacher.name_or_path + "\n", encoding="utf-8")
    return merged


def _write_shard(utts, transcripts, ark_path, scp_path, teacher, batch_size, device):
    tmp_scp = scp_path.with_name(scp_path.name + ".tmp")
    with kaldiio.WriteHelper(f"ark,scp:{ark_path},{tmp_scp}") as writer:
        for start in range(0, len(utts), batch_size):
            batch = utts[start : start + batch_size]
            states, lengths, _ = teacher.encode(
                [transcripts[u] for u in batch], device, utt_ids=batch
            )
            for utt, state, length in zip(batch, states, lengths):
                writer(utt, state[: int(length)].cpu().numpy().astype(np.float32))
    os.replace(tmp_scp, scp_path)  # the shard counts as done only from here


def _data_entries(args: Sequence[str], option: str) -> List[List[str]]:
    entries = []
    for k, arg in enumerate(args):
        if arg == option and k + 1 < len(args):
            entries.append(args[k + 1].split(","))
        elif arg.startswith(option + "="):
            entries.append(arg[len(option) + 1 :].split(","))
    return entries


def check_plm_cache_covers_data(args: Iterable[str]) -> None:
    """Refuse to train when a ``plm_states`` cache lacks an utterance of the data.

    ``args`` are ESPnet ``asr_train`` arguments; the cache is compared with the
    ``text`` entry of the same split. Raises ``SystemExit`` naming what is missing.
    """
    args = list(args)
    for split in ("train", "valid"):
        entries = _data_entries(args, f"--{split}_data_path_and_name_and_type")
        caches = [e[0] for e in entries if len(e) >= 2 and e[1] == DATA_KEY]
        texts = [e[0] for e in entries if len(e) >= 2 and e[1] == "text"]
        if not caches or not texts:
            continue
        cached = set(read_scp_keys(Path(caches[0])))
        needed = read_text(Path(texts[0]))
        missing = sorted(set(needed) - cached)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise SystemExit(
                f"The PLM-state cache {caches[0]} lacks {len(missing)} of the "
                f"{len(needed)} utterances of {texts[0]} ({shown}). Refusing to train "
                f"on it: rerun `python -m espnet_gmot.bin.dump_plm_states --text "
                f"{texts[0]} --output_dir {Path(caches[0]).parent}` (it resumes)."
            )
