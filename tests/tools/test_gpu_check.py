"""The offline wheelhouse and the bounded GPU check, dry-run on the CPU.

``tools/build_wheelhouse.py`` builds the set for this Python (ESPnet 202511,
less what the GPU node has); a stand-in for the node is a fresh venv holding
only what the set relies on the node for (``*.node.txt``) and pytest; then
``tools/gpu_check.sh --dry-run`` installs the set with ``--no-index --no-deps``
into an empty ``--target`` and runs every step at tiny sizes on the CPU, so the
check cannot rot between GPU runs. Marked ``install`` (it downloads the set and
a torch for the stand-in).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import build_wheelhouse  # noqa: E402

STEPS = ("install_espnet202511", "cuda_tests", "train_decode", "bench_ot", "bench_model",
         "bench_decode")


def test_present_file_names_and_pins(tmp_path):
    present = tmp_path / "present.txt"
    present.write_text("# the node\ntorch==2.11.0\nHuggingFace_Hub\n\nnumpy == 2.5.2  # pinned\n")
    names, pins = build_wheelhouse.read_present(present)
    assert names == {"torch", "huggingface-hub", "numpy"}
    assert pins == ["torch==2.11.0", "numpy==2.5.2"]
    present.write_text("torch>=2.11\n")
    with pytest.raises(build_wheelhouse.WheelhouseError, match=r"line 1: 'torch>=2.11' is neither"):
        build_wheelhouse.read_present(present)


def test_missing_python_is_named():
    with pytest.raises(build_wheelhouse.WheelhouseError, match="no Python 3.99 found.*--python"):
        build_wheelhouse.find_python("3.99")


def test_gpu_check_refuses_a_missing_wheelhouse(tmp_path):
    proc = subprocess.run(["bash", REPO / "tools" / "gpu_check.sh", "--wheelhouse", tmp_path / "none"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--wheelhouse DIR is required and must exist" in proc.stderr


@pytest.mark.install
@pytest.mark.slow
def test_wheelhouse_installs_offline_and_the_dry_run_passes(tmp_path):
    try:
        wheelhouse_and_dry_run(tmp_path)
    finally:
        # a stand-in node's venv holds a torch (GBs): never left behind, even on failure
        for folder in ("node", "wheelhouse"):
            shutil.rmtree(tmp_path / folder, ignore_errors=True)


def wheelhouse_and_dry_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheelhouse = tmp_path / "wheelhouse"
    tag = "py%d%d" % sys.version_info[:2]
    subprocess.run([sys.executable, REPO / "tools" / "build_wheelhouse.py", "--output", wheelhouse,
                    "--python", sys.executable, "--espnet", "202511",
                    "--skip", "av", "kernels", "pyworld", "--also", "editdistance", "hsk-sentences-audio"],
                   check=True, env=env, timeout=1800)
    listing = (wheelhouse / f"espnet202511-{tag}.txt").read_text().splitlines()
    assert "espnet==202511" in listing and any(line.startswith("espnet-gmot==") for line in listing)
    assert not any(re.match(r"(torch|torchaudio|av|pyworld)==", line) for line in listing)

    node = tmp_path / "node"
    subprocess.run([sys.executable, "-m", "venv", node], check=True, env=env)
    python = node / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "pip<26"], check=True, env=env)
    subprocess.run([python, "-m", "pip", "install", "-q", "-r",
                    wheelhouse / f"espnet202511-{tag}.node.txt", "pytest"],
                   check=True, env=env, timeout=1800)
    # The stand-in has no ESPnet: only the wheelhouse can bring it.
    assert subprocess.run([python, "-c", "import espnet2"], env=env).returncode != 0

    report = tmp_path / "out" / "gpu_check_report.md"
    proc = subprocess.run(["bash", REPO / "tools" / "gpu_check.sh", "--wheelhouse", wheelhouse,
                           "--report", report, "--dry-run"],
                          env=dict(env, PYTHON=str(python)), capture_output=True, text=True,
                          timeout=5400)  # above the dry run's step limits added up (4200 s)
    text = report.read_text()
    assert proc.returncode == 0, proc.stderr[-3000:] + text[-6000:]
    for step in STEPS:
        assert re.search(rf"^## {step}: passed \(\d+ s of \d+ s\)$", text, re.M), step
    assert re.search(r"^## espnet202611: skipped \(the wheelhouse has no espnet202611", text, re.M)
    assert "greedy = ESPnet's CTC best path on 16 of 16 utterances" in text
    assert (report.parent / "gpu_check_logs.tar.gz").stat().st_size > 0
