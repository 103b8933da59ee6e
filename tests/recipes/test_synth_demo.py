"""The generated-corpus demo, reduced: tiny corpus, 1 epoch, all four systems."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from espnet_gmot.kaldi_data import read_kaldi_map, read_text

RECIPE = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot"
SYSTEMS = ("baseline", "otbert", "totcakt", "gmot")
NAMES = {"baseline": "Conformer-CTC (stock ESPnet)", "otbert": "OT-BERT", "totcakt": "TOT-CAKT",
         "gmot": "GM-OT"}
SETS = ("dev", "test")
# The environment's bin/ first: tools/install.sh links sclite there.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

# The whole demo, reduced: end-to-end, so slow.
demo_test = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sclite", path=PATH) is None,
    reason="needs espeak-ng and sclite (tools/install.sh installs them)",
)


def run_demo(recipe: Path, *options: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=PATH, OMP_NUM_THREADS="1")
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


def sclite_summary(result: Path):
    """``(#Snt, #Wrd, Err %)`` of sclite's Sum/Avg line and ``{speaker: #utts}``."""
    text = result.read_text(errors="replace")
    summary = re.search(r"\| Sum/Avg\s*\|\s*(\d+)\s+(\d+)\s*\|(?:\s*[0-9.]+){4}\s+([0-9.]+)", text)
    assert summary, f"{result}: no Sum/Avg line"
    speakers = re.findall(r"Speaker sentences\s+\d+:\s+(\S+)\s+#utts: (\d+)", text)
    return (int(summary[1]), int(summary[2]), float(summary[3])), {s: int(n) for s, n in speakers}


def results_table(markdown: str):
    """RESULTS.md's system table as ``{system name: {column header: cell}}``."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {cells[0]: dict(zip(header, cells)) for cells in rows if len(cells) == len(header)}


def test_results_table_reads_every_column():
    markdown = (
        "| system | dev CER (%) | test CER (%) | parameters |\n|---|---|---|---|\n"
        "| Conformer-CTC (stock ESPnet) | 332.1 | 252.5 | 1,189,402 |\n"
    )
    row = results_table(markdown)["Conformer-CTC (stock ESPnet)"]
    assert (row["dev CER (%)"], row["test CER (%)"], row["parameters"]) == ("332.1", "252.5", "1,189,402")


@pytest.mark.slow
@demo_test
def test_results_table_matches_sclite_on_every_system_and_set(demo):
    recipe, _ = demo
    table = results_table((recipe / "RESULTS.md").read_text(encoding="utf-8"))
    for system in SYSTEMS:
        row = table[NAMES[system]]
        for set_name in SETS:
            table_cer = float(row[f"{set_name} CER (%)"])
            data = recipe / "data" / set_name
            (sentences, characters, cer), speakers = sclite_summary(
                recipe / "exp" / f"asr_{system}" / f"decode_{set_name}" / "score_cer" / "result.txt"
            )
            # The whole set scored on characters, and the table shows that score.
            texts = read_text(data / "text")
            assert sentences == len(texts)
            assert characters == sum(len(t.replace(" ", "")) for t in texts.values())
            assert table_cer == round(cer, 1)
            # sclite's speakers are utt2spk's (lower-cased by sclite), not cut
            # from utterance ids (BAC009S0001W0001 -> S0001, never BAC009S000).
            utt2spk = list(read_kaldi_map(data / "utt2spk").values())
            expected = {spk.lower(): utt2spk.count(spk) for spk in set(utt2spk)}
            assert speakers == expected, f"{system} {set_name}"


@pytest.mark.slow
@demo_test
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


@pytest.mark.slow
@demo_test
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
