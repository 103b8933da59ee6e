"""``pip install <espnet-gmot>`` into a fresh venv, without tools/constraints.txt.

What a new user does: a new Python environment, ``pip install "pip<26"`` (pip 26
refuses espnet's ``ci_sdr`` dependency), then ``pip install <espnet-gmot>``, and
nothing else. The environment must hold a working plugin: ``pip check`` clean,
a torchaudio that matches torch (espnet2 imports it at module level), and a tiny
GM-OT training and decoding through ``python -m espnet_gmot.bin.asr_train`` /
``asr_inference`` with ESPnet's trainer defaults (``use_tensorboard: true``,
``num_att_plot: 3``: tensorboard and matplotlib).

Marked ``install``: it downloads what pip resolves (torch and its CUDA wheels,
about 6 GB, fast from pip's cache on a second run) and takes a few minutes;
``pytest -m "not install"`` leaves it out. It never skips: without the network
or a pip cache that has the wheels, it fails.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import make_tiny_bert, make_tiny_corpus, tiny_gmot_config_text

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "tests" / "espnet" / "conf"


def _clean_env():
    """The user's environment, minus anything that points at this checkout or our pins."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PIP_CONSTRAINT", "PIP_REQUIREMENT", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    return env


def copy_checkout(destination: Path) -> None:
    """The checkout's files that git tracks or would track (untracked, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
        capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        path = REPO / name
        if path.is_file():  # a deleted, not yet committed file is still listed
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / name)


def _run(cmd, cwd, env, timeout=3600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv of this interpreter with ``pip install <repo>``; removed afterwards."""
    root = tmp_path_factory.mktemp("fresh_install")
    env = _clean_env()
    python = root / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "venv", root / "venv"], root, env)
    _run([python, "-m", "pip", "install", "-q", "pip<26"], root, env)
    # A copy, so that the build cannot write into the checkout (build/, egg-info),
    # of what a clone holds: nothing ignored (venvs, wheelhouses: GBs).
    source = root / "espnet-gmot"
    copy_checkout(source)
    log = _run([python, "-m", "pip", "install", source], root, env)
    (root / "pip_install.log").write_text(log)
    work = root / "work"  # run from elsewhere: only the installed package is importable
    work.mkdir()
    yield dict(root=root, python=python, env=env, work=work)
    shutil.rmtree(root / "venv", ignore_errors=True)


def test_pip_check_is_clean(venv):
    out = _run([venv["python"], "-m", "pip", "check"], venv["work"], venv["env"])
    assert "No broken requirements found" in out


def test_torchaudio_matches_torch_and_trainer_extras_import(venv):
    # The versions pip resolved, read without importing them, so that a pair
    # that does not load together is named in the failure.
    resolved = _run([venv["python"], "-c",
                     "import importlib.metadata as m; print(*(m.version(p) for p in "
                     "('torch', 'torchaudio', 'espnet')))"], venv["work"], venv["env"]).split()
    torch_version, torchaudio_version, espnet_version = resolved[-3:]
    code = ("import torch, torchaudio, tensorboard, matplotlib, espnet_gmot, espnet2.tasks.asr;"
            "print(espnet_gmot.__file__)")
    try:
        location = _run([venv["python"], "-c", code], venv["work"], venv["env"]).split()[-1]
    except AssertionError as error:
        raise AssertionError(
            f"A plain `pip install espnet-gmot` resolved torch {torch_version} with torchaudio "
            f"{torchaudio_version} (espnet {espnet_version}), and they do not import together. "
            "An upstream release has broken a fresh install: exclude that pair in setup.py's "
            "install_requires and update the supported matrix in README.md "
            f"(\"Supported versions\").\n{error}") from None
    # Every supported pair has equal releases (README, "Supported versions").
    release = re.compile(r"^(\d+\.\d+\.\d+)")
    assert release.match(torch_version)[1] == release.match(torchaudio_version)[1], (
        f"pip resolved torch {torch_version} with torchaudio {torchaudio_version}, a pair not "
        "in the supported matrix (README.md, \"Supported versions\"): measure it, then admit "
        "or exclude it in setup.py")
    assert location.startswith(str(venv["root"] / "venv")), location  # the installed copy


def test_asr_train_help_lists_the_plugin(venv):
    out = _run([venv["python"], "-m", "espnet_gmot.bin.asr_train", "--help"],
               venv["work"], venv["env"])
    assert re.search(r"--model \{[^}]*\bgmot\b", out), out[:3000]
    assert re.search(r"--frontend \{[^}]*\bfbank_pitch\b", out)


def test_tiny_train_and_decode_with_espnet_defaults(venv, tmp_path):
    corpus = make_tiny_corpus(tmp_path)
    bert = make_tiny_bert(tmp_path / "bert")
    config = tmp_path / "tiny_gmot.yaml"
    text = tiny_gmot_config_text(bert, max_epoch=1)
    # ESPnet's defaults: tensorboard logging and attention plots.
    text = re.sub(r"^(use_tensorboard|num_att_plot):.*\n", "", text, flags=re.M)
    config.write_text(text)
    exp = tmp_path / "exp"
    exp.mkdir()
    python = str(venv["python"])
    how = dict(cwd=venv["work"], env=venv["env"])
    train = [python, "-m", "espnet_gmot.bin.asr_train"]
    stats = pipeline.collect_stats(exp, config, corpus, command=train, **how)
    model = pipeline.train(exp, config, corpus, stats, command=train, **how)
    assert list((model / "tensorboard").rglob("events.out.tfevents.*"))
    assert list((model / "att_ws").rglob("*.png"))
    hyps = pipeline.decode(exp, model, corpus["valid"], "valid",
                           command=[python, "-m", "espnet_gmot.bin.asr_inference"], **how)
    assert sorted(hyps) == sorted(pipeline.read_text(corpus["valid"] / "text"))
