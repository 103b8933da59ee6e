"""A stand-in ESPnet checkout and aishell asr1 experiment for the tests of the
AISHELL-1 recipe ``egs2/aishell/asr_gmot`` (tests/recipes/test_aishell_*.py).

``egs2/TEMPLATE/asr1/`` gets an ``asr.sh`` that only records the arguments it
receives (and sources the recipe's path.sh and cmd.sh, like the real one) and a
``utils/parse_options.sh`` of Kaldi's convention; ``egs2/aishell/asr1`` gets
data/, dump/ and a token list. No ESPnet or Kaldi code is copied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import soundfile

from espnet_gmot.kaldi_data import utt2spk_to_spk2utt, write_kaldi_map
from tests.helpers.tiny_asr import SENTENCES

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs2" / "aishell" / "asr_gmot"
# Created by local/setup.sh or by running the recipe; never part of the recipe.
GENERATED = {"asr.sh", "db.sh", "pyscripts", "scripts", "utils", "steps", "data", "dump", "exp"}

STANDIN_ASR_SH = """#!/usr/bin/env bash
# Stand-in for ESPnet's asr.sh: records its arguments one per line, then sources
# the recipe's path.sh and cmd.sh as asr.sh does, and records what they set.
set -euo pipefail
printf '%s\\n' "$@" > asr_sh_args.txt
. ./path.sh
. ./cmd.sh
printf 'MAIN_ROOT=%s\\ntrain_cmd=%s\\ncwd=%s\\n' "${MAIN_ROOT}" "${train_cmd}" "${PWD}" > asr_sh_env.txt
"""

# Stand-in for Kaldi's utils/parse_options.sh, which the recipe's local/ scripts
# source: the same convention, written anew (no Kaldi code), --config files left out.
STANDIN_PARSE_OPTIONS = r"""# stand-in for Kaldi's utils/parse_options.sh (sourced)
while [ -n "${1:-}" ]; do
    case "$1" in
        --help|-h) printf '%s\n' "${help_message:-No help found.}" >&2; exit 0 ;;
        --*=*) echo "$0: options to scripts must be of the form --name value, got '$1'"; exit 1 ;;
        --*) name="${1#--}"; name="${name//-/_}"
            if [ -z "${!name+set}" ]; then echo "$0: invalid option $1" >&2; exit 1; fi
            if [[ "${!name}" =~ ^(true|false)$ && ! "$2" =~ ^(true|false)$ ]]; then
                echo "$0: expected \"true\" or \"false\": $1 $2" >&2; exit 1
            fi
            printf -v "${name}" '%s' "$2"; shift 2 ;;
        *) break ;;
    esac
done
true
"""


# An ESPnet checkout to run the recipes through ESPnet's real asr.sh.
ESPNET_ROOT_ENV = "ESPNET_GMOT_ESPNET_ROOT"
REAL_ESPNET_ROOT = os.environ.get(ESPNET_ROOT_ENV, "")
needs_real_asr_sh = pytest.mark.skipif(
    not (Path(REAL_ESPNET_ROOT) / "egs2/TEMPLATE/asr1/utils/parse_options.sh").is_file(),
    reason=f"set {ESPNET_ROOT_ENV} to an ESPnet checkout (egs2/TEMPLATE/asr1 with Kaldi's "
           "utils/) to run the real asr.sh",
)


def run(cmd: Sequence[str], cwd: Path, check: bool = True, **env_extra: str):
    env = dict(os.environ)
    env.pop("ESPNET_ROOT", None)
    env.pop("python", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # the espnet_gmot of this checkout, not another one the environment may have installed
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(env_extra)
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def recorded_args(recipe: Path) -> List[Tuple[str, str]]:
    """The (option, value) pairs the stand-in asr.sh received, in order."""
    lines = (recipe / "asr_sh_args.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) % 2 == 0, lines
    pairs = list(zip(lines[0::2], lines[1::2]))
    for name, _ in pairs:
        assert name.startswith("--") and "=" not in name, pairs
    return pairs


def final_options(recipe: Path) -> Dict[str, str]:
    """asr.sh's view: Kaldi's parse_options.sh lets a later value win."""
    return {name[2:]: value for name, value in recorded_args(recipe)}


def listing(root: Path) -> List[Tuple[str, str]]:
    """Every path under root (links not followed) with its kind / link target."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            kind = f"-> {os.readlink(path)}" if path.is_symlink() else (
                "dir" if path.is_dir() else f"file {path.stat().st_size}")
            out.append((str(path.relative_to(root)), kind))
    return sorted(out)


def write_kaldi_dir(directory: Path, entries: Dict[str, Tuple[str, str]], feats_type: str = "raw"):
    """Minimal dump dir: utt -> (wav.scp value, transcript)."""
    directory.mkdir(parents=True, exist_ok=True)
    utts = sorted(entries)
    write_kaldi_map(directory / "wav.scp", ((u, entries[u][0]) for u in utts))
    write_kaldi_map(directory / "text", ((u, entries[u][1]) for u in utts))
    utt2spk = {u: u.split("-")[0] for u in utts}
    write_kaldi_map(directory / "utt2spk", utt2spk)
    write_kaldi_map(directory / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    (directory / "feats_type").write_text(feats_type + "\n")


def make_espnet_root(root: Path) -> Path:
    template = root / "egs2" / "TEMPLATE" / "asr1"
    for sub in ("pyscripts/utils", "scripts/utils", "utils", "steps"):
        (template / sub).mkdir(parents=True, exist_ok=True)
    (template / "asr.sh").write_text(STANDIN_ASR_SH)
    (template / "asr.sh").chmod(0o755)
    (template / "db.sh").write_text("# stand-in db.sh\n")
    (template / "path.sh").write_text("# stand-in path.sh (the recipe has its own)\n")
    (template / "utils" / "parse_options.sh").write_text(STANDIN_PARSE_OPTIONS)
    return root


# asr.sh's dump layout after its stages 3-4: the training and valid sets are
# dumped into org/<set> (stage 3) and copied without too short or too long
# utterances into <set> (stage 4); test sets are dumped directly into <set>.
ORG_SETS = ("train_sp", "dev")


def make_asr1(asr1: Path, audio: str = "flac", sets: Dict[str, str] = None,
              org_sets: Sequence[str] = ORG_SETS, sentences: Sequence[str] = SENTENCES,
              token_list: Sequence[str] = None, token_dir: str = "zh_token_list/char") -> Path:
    """Stand-in egs2/aishell/asr1 after its stage 5: data/, dump/raw/, token list.

    ``audio="flac"``: wav.scp lists flac files by paths relative to the recipe
    dir (as asr.sh's stage 3 writes them); ``"flac.ark"``: ark offsets.
    ``org/<set>`` of the training and valid sets (``org_sets``) holds a third
    utterance, one that stage 4 filtered out of ``<set>``. Another corpus's
    asr1: its ``sets``, ``org_sets``, ``sentences``, ``token_list`` (default:
    the sentences' characters) and ``data/<token_dir>``.
    """
    sets = sets or {"train_sp": "sp", "dev": "dv", "test": "ts"}
    rng = np.random.default_rng(0)
    token_path = asr1 / "data" / token_dir / "tokens.txt"
    token_path.parent.mkdir(parents=True)
    if token_list is None:
        token_list = ["<blank>", "<unk>", *sorted(set("".join(sentences))), "<sos/eos>"]
    token_path.write_text("\n".join(token_list) + "\n", encoding="utf-8")
    (asr1 / "data" / "train").mkdir(parents=True)
    for k, (dset, prefix) in enumerate(sets.items()):
        stage3_dir = f"org/{dset}" if dset in org_sets else dset
        entries = {}
        for j in range(3 if dset in org_sets else 2):
            utt = f"{prefix}spk{j}-{dset}{j:03d}"
            rel = f"dump/raw/{stage3_dir}/data/format.1"
            if audio == "flac":
                (asr1 / rel).mkdir(parents=True, exist_ok=True)
                t = np.arange(int(0.4 * 16000)) / 16000
                wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * j) * t) + 0.01 * rng.standard_normal(t.size)
                soundfile.write(asr1 / rel / f"{utt}.flac", wave, 16000, subtype="PCM_16")
                value = f"{rel}/{utt}.flac"
            else:
                value = f"{rel}/data_wav.ark:{17 + 100 * j}"
            entries[utt] = (value, sentences[(3 * k + j) % len(sentences)])
        write_kaldi_dir(asr1 / "dump" / "raw" / stage3_dir, entries)
        if dset in org_sets:
            kept = dict(sorted(entries.items())[:2])
            write_kaldi_dir(asr1 / "dump" / "raw" / dset, kept)
    return asr1


def build_with_asr_task(config: Path, tokens: Sequence[str], token_type: str, tmp_path: Path):
    """The model of a recipe config, built by ESPnet's ASRTask with ``tokens`` as
    its token list (the PLM is not loaded: the teacher loads on first use)."""
    from espnet2.tasks.asr import ASRTask

    from espnet_gmot.espnet.registry import register

    register()
    token_list = tmp_path / "tokens.txt"
    token_list.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    args = ASRTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(token_list), "--token_type", token_type,
         "--output_dir", str(tmp_path / "out")])
    return ASRTask.build_model(args)


def copy_recipe(dst: Path) -> Path:
    def ignore(directory, names):
        return [n for n in names if n in GENERATED or n == "__pycache__"
                or n.startswith("asr_sh_") or (Path(directory) / n).is_symlink()]

    shutil.copytree(RECIPE, dst, symlinks=True, ignore=ignore)
    return dst


def setup_and_run(recipe: Path, *run_args: str, setup_args: Sequence[str] = (), **env) -> Dict[str, str]:
    run(["local/setup.sh", *setup_args], recipe, **env)
    run(["./run.sh", *run_args], recipe, **env)
    return final_options(recipe)
