"""The generated-corpus demo, reduced: tiny corpus, 1 epoch, all four systems."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot"
SYSTEMS = ("baseline", "otbert", "totcakt", "gmot")

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None
    or not (shutil.which("sclite") or Path("/usr/lib/sctk/bin/sclite").exists()),
    reason="needs espeak-ng and sclite (tools/install.sh installs them)",
)


def run_demo(recipe: Path, *options: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    return subprocess.run(
        ["bash", str(recipe / "run.sh"), "--corpus_opts", "--tiny", "--plm_minutes", "1",
         "--plm_opts", "--max_steps 30", "--max_epoch", "1", "--plot_utts", "2", *options],
        capture_output=True, text=True, env=env, timeout=600,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    recipe = tmp_path_factory.mktemp("demo") / "asr_gmot"
    shutil.copytree(RECIPE, recipe, ignore=shutil.ignore_patterns(
        "downloads", "data", "dump", "exp", "couplings", "RESULTS.md"))
    done = run_demo(recipe)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return recipe, done


def test_results_table_has_every_system_and_set(demo):
    recipe, _ = demo
    results = (recipe / "RESULTS.md").read_text(encoding="utf-8")
    for name in ("Conformer-CTC (stock ESPnet)", "OT-BERT", "TOT-CAKT", "GM-OT"):
        row = next(line for line in results.splitlines() if line.startswith(f"| {name} |"))
        dev, test = re.findall(r"\| ([0-9.]+) \|", row)[:2]
        assert 0.0 <= float(dev) and 0.0 <= float(test)
    for system in SYSTEMS:
        for split in ("dev", "test"):
            sclite = recipe / "exp" / f"asr_{system}" / f"decode_{split}" / "score_cer" / "result.txt"
            assert "Sum/Avg" in sclite.read_text(errors="replace")


def test_coupling_pictures_render(demo):
    import matplotlib.image

    recipe, _ = demo
    pictures = sorted((recipe / "couplings").glob("*.png"))
    assert len(pictures) == 2
    for picture in pictures:
        image = matplotlib.image.imread(picture)
        assert image.shape[0] > 200 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert all(f"]({p.relative_to(recipe).as_posix()})" in (recipe / "RESULTS.md").read_text()
               for p in pictures)


def test_rerun_reuses_finished_work(demo):
    recipe, _ = demo
    models = {s: (recipe / "exp" / f"asr_{s}" / "valid.cer_ctc.ave.pth").stat().st_mtime_ns
              for s in SYSTEMS}
    decoded = (recipe / "exp" / "asr_gmot" / "decode_test" / "text").stat().st_mtime_ns
    again = run_demo(recipe, "--stage", "1", "--stop_stage", "7")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "trained, kept" in again.stdout and "exists, kept" in again.stdout
    for system, mtime in models.items():
        assert (recipe / "exp" / f"asr_{system}" / "valid.cer_ctc.ave.pth").stat().st_mtime_ns == mtime
    assert (recipe / "exp" / "asr_gmot" / "decode_test" / "text").stat().st_mtime_ns == decoded


def test_bad_option_is_named(tmp_path):
    done = subprocess.run(["bash", str(RECIPE / "run.sh"), "--max_epochs", "3"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --max_epochs" in done.stderr
