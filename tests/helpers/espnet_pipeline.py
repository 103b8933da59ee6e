"""Drive ESPnet's own entry points the way asr.sh stages 10-13 do, for the tests.

Every step is a subprocess of ``python -m espnet_gmot.launch -m espnet2.bin.<x>``,
the same routing as asr.sh's ``--python "python3 -m espnet_gmot.launch"``;
``command`` replaces that prefix (e.g. another environment's
``[python, "-m", "espnet_gmot.bin.asr_train"]``), ``cwd`` the directory.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import editdistance

from espnet_gmot import kaldi_data

LAUNCH = [sys.executable, "-m", "espnet_gmot.launch", "-m"]
# asr.sh's token options: character units; a BPE corpus gives
# ("--token_type", "bpe", "--bpemodel", <its bpe.model>).
CHAR_UNITS = ("--token_type", "char")


def run(module: str, args: Sequence[str], log: Path, command: Optional[Sequence[str]] = None,
        cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> None:
    cmd = [*(command if command is not None else [*LAUNCH, module]), *map(str, args)]
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[:3]} {module} failed ({proc.returncode}); log {log}:\n"
                             + Path(log).read_text()[-4000:])


def data_args(split: str, data_dir: Path, extra: Sequence[str] = ()) -> List[str]:
    option = f"--{split}_data_path_and_name_and_type"
    return [option, f"{data_dir}/wav.scp,speech,sound", option, f"{data_dir}/text,text,text",
            *[a for entry in extra for a in (option, entry)]]


def collect_stats(exp: Path, config: Path, corpus: Dict[str, Path],
                  units: Sequence[str] = CHAR_UNITS, **how) -> Path:
    """asr.sh stage 10: shapes and feature statistics (one job)."""
    stats = exp / "stats"
    run("espnet2.bin.asr_train", [
        "--collect_stats", "true", "--use_preprocessor", "true",
        *units, "--token_list", corpus["token_list"],
        "--config", config, "--output_dir", stats,
        "--train_shape_file", corpus["train"] / "wav.scp",
        "--valid_shape_file", corpus["valid"] / "wav.scp",
        *data_args("train", corpus["train"]), *data_args("valid", corpus["valid"]),
    ], exp / "collect_stats.log", **how)
    return stats


def train_args(out: Path, config: Path, corpus: Dict[str, Path], stats: Path,
               extra_train: Sequence[str] = (), extra_valid: Sequence[str] = (),
               extra_args: Sequence[str] = (), units: Sequence[str] = CHAR_UNITS) -> List[str]:
    """The arguments of asr.sh's stage-11 ``asr_train`` call (CPU, ``--ngpu 0``)."""
    return [str(a) for a in [
        "--use_preprocessor", "true", *units,
        "--token_list", corpus["token_list"], "--config", config,
        "--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats}/train/feats_stats.npz",
        "--output_dir", out, "--ngpu", "0",
        "--train_shape_file", f"{stats}/train/speech_shape",
        "--valid_shape_file", f"{stats}/valid/speech_shape", "--fold_length", "80000",
        *data_args("train", corpus["train"], extra_train),
        *data_args("valid", corpus["valid"], extra_valid),
        *extra_args,
    ]]


def train(exp: Path, config: Path, corpus: Dict[str, Path], stats: Path,
          extra_train: Sequence[str] = (), extra_valid: Sequence[str] = (),
          extra_args: Sequence[str] = (), units: Sequence[str] = CHAR_UNITS, **how) -> Path:
    """asr.sh stage 11 (one process)."""
    out = exp / "model"
    run("espnet2.bin.asr_train",
        train_args(out, config, corpus, stats, extra_train, extra_valid, extra_args, units),
        exp / "train.log", **how)
    return out


def decode(exp: Path, model_dir: Path, data_dir: Path, name: str,
           decode_config: Optional[Path] = None, model_file: str = "valid.loss.best.pth",
           ngpu: int = 0, **how) -> Dict[str, str]:
    """asr.sh stage 12 (one job): CTC decoding with Speech2Text; returns hyps."""
    out = exp / f"decode_{name}"
    args = [
        "--ngpu", ngpu, "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
        "--key_file", data_dir / "wav.scp",
        "--asr_train_config", model_dir / "config.yaml",
        "--asr_model_file", model_dir / model_file, "--output_dir", out,
    ]
    if decode_config is not None:
        args += ["--config", decode_config]
    else:
        args += ["--beam_size", "1", "--ctc_weight", "1.0", "--lm_weight", "0.0"]
    run("espnet2.bin.asr_inference", args, exp / f"decode_{name}.log", **how)
    return read_text(out / "1best_recog" / "text")


def read_text(path: Path) -> Dict[str, str]:
    """Kaldi ``text`` with the spaces between tokens removed (CER over characters)."""
    return {utt: text.replace(" ", "") for utt, text in kaldi_data.read_text(path).items()}


def cer(hyps: Dict[str, str], data_dir: Path) -> float:
    refs = read_text(data_dir / "text")
    errors = sum(editdistance.eval(hyps.get(u, ""), r) for u, r in refs.items())
    return errors / sum(len(r) for r in refs.values())


def epoch_results(log: Path) -> List[str]:
    """ESPnet trainer's 'epoch results' lines of a training log, one per epoch."""
    return [line for line in Path(log).read_text().splitlines() if "epoch results" in line]


def train_losses(log: Path) -> List[float]:
    """Per-epoch training loss from the 'epoch results' lines."""
    return [float(m) for m in re.findall(r"epoch results: \[train\] .*?\bloss=([0-9.e+-]+)",
                                         Path(log).read_text())]
