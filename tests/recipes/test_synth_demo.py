"""The generated-corpus demo, reduced: tiny corpus, 1 epoch, all four systems and the
control, two seeds."""

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from espnet_gmot.kaldi_data import read_kaldi_map, read_text

RECIPE = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot"
SYSTEMS = ("baseline", "otbert", "totcakt", "gmot", "gmot_control")
SEEDS = (0, 3)
NAMES = {"baseline": "Conformer-CTC (stock ESPnet)", "otbert": "OT-BERT", "totcakt": "TOT-CAKT",
         "gmot": "GM-OT", "gmot_control": "GM-OT with an untrained teacher (control)"}
SETS = ("dev", "test")
# The environment's bin/ first: tools/install.sh links sclite there.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
# Against a hang, not a timing: beside the test command's other worker the
# reduced demo took over 10 minutes on 2 cores.
HANG_GUARD_S = 1800

# The whole demo, reduced: end-to-end, so slow.
demo_test = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sclite", path=PATH) is None,
    reason="needs espeak-ng and sclite (tools/install.sh installs them)",
)


def run_demo(recipe: Path, *options: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=PATH, OMP_NUM_THREADS="1")
    return subprocess.run(
        ["bash", str(recipe / "run.sh"), "--corpus_opts", "--tiny", "--plm_steps", "30",
         "--max_epoch", "1", "--plot_utts", "2", *options],
        capture_output=True, text=True, env=env, timeout=HANG_GUARD_S,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    recipe = tmp_path_factory.mktemp("demo") / "asr_gmot"
    shutil.copytree(RECIPE, recipe, ignore=shutil.ignore_patterns(
        "downloads", "data", "dump", "exp", "couplings", "RESULTS.md", "teacher_axis"))
    done = run_demo(recipe, "--systems", " ".join(SYSTEMS), "--seeds", " ".join(map(str, SEEDS)))
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
def test_results_table_matches_sclite_on_every_system_seed_and_set(demo):
    recipe, _ = demo
    results = (recipe / "RESULTS.md").read_text(encoding="utf-8")
    table = results_table(results)
    per_seed = results_table(results[results.index("## CER of every seed"):])
    for system in SYSTEMS:
        cers = {set_name: [] for set_name in SETS}
        for seed in SEEDS:
            run = recipe / "exp" / f"asr_{system}_seed{seed}"
            # ESPnet trained this run with this seed.
            assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
            for set_name in SETS:
                data = recipe / "data" / set_name
                (sentences, characters, cer), speakers = sclite_summary(
                    run / f"decode_{set_name}" / "score_cer" / "result.txt")
                # The whole set scored on characters.
                texts = read_text(data / "text")
                assert sentences == len(texts)
                assert characters == sum(len(t.replace(" ", "")) for t in texts.values())
                # sclite's speakers are utt2spk's (lower-cased by sclite), not cut
                # from utterance ids (BAC009S0001W0001 -> S0001, never BAC009S000).
                utt2spk = list(read_kaldi_map(data / "utt2spk").values())
                expected = {spk.lower(): utt2spk.count(spk) for spk in set(utt2spk)}
                assert speakers == expected, f"{system} {set_name}"
                cers[set_name].append(cer)
        # Every seed's CER is sclite's, and the main table holds their mean and
        # deviation. RESULTS.md counts errors from sclite's alignments and rounds
        # once; sclite rounds its own figure (201.25% reads 201.3 there, 201.2 here),
        # so two roundings apart: 0.1 at most.
        rounding = 0.1 + 1e-9
        cells = per_seed[NAMES[system]][f"seed {SEEDS[1]}"].split(" / ")
        assert [abs(float(cell) - cers[set_name][1]) <= rounding for cell, set_name in zip(cells, SETS)] \
            == [True, True], (system, cells)
        for set_name in SETS:
            mean, deviation = table[NAMES[system]][f"{set_name} CER (%)"].split(" ± ")
            assert abs(float(mean) - statistics.mean(cers[set_name])) <= rounding
            assert abs(float(deviation) - statistics.stdev(cers[set_name])) <= rounding
    # Every system against the baseline, and GM-OT against its control.
    differences = results[results.index("## Differences"):results.index("## Errors at homophone")]
    assert differences.count("| Conformer-CTC (stock ESPnet) |") == len(SYSTEMS) - 1
    assert "| GM-OT | GM-OT with an untrained teacher (control) |" in differences
    assert "## Errors at homophone positions" in results


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
def test_rerun_from_scratch_gives_the_same_teacher_models_and_hypotheses(demo, tmp_path):
    """The demo is deterministic on CPU: a second run from scratch, in another
    directory, trains the same teachers bit for bit and then the same models,
    which decode to the same hypotheses (seed 0 of every system)."""
    first, _ = demo
    second = tmp_path / "asr_gmot"
    shutil.copytree(RECIPE, second, ignore=shutil.ignore_patterns(
        "downloads", "data", "dump", "exp", "couplings", "RESULTS.md", "teacher_axis"))
    done = run_demo(second, "--systems", " ".join(SYSTEMS), "--seeds", "0", "--stop_stage", "7")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for teacher in ("teacher_plm", "teacher_plm_control"):
        weights = Path("exp") / teacher / "model.safetensors"
        assert digest(second / weights) == digest(first / weights), weights
    for system in SYSTEMS:
        run = Path("exp") / f"asr_{system}_seed0"
        theirs = torch.load(first / run / "valid.cer_ctc.ave.pth", map_location="cpu")
        ours = torch.load(second / run / "valid.cer_ctc.ave.pth", map_location="cpu")
        assert theirs.keys() == ours.keys()
        changed = [key for key in theirs if not torch.equal(theirs[key], ours[key])]
        assert not changed, f"{run}: {len(changed)} tensors differ, e.g. {changed[:3]}"
        for test_set in SETS:
            hypotheses = run / f"decode_{test_set}" / "text"
            assert read_text(second / hypotheses) == read_text(first / hypotheses), hypotheses


@pytest.mark.slow
@demo_test
def test_rerun_reuses_finished_work(demo):
    recipe, _ = demo
    models = {run: (run / "valid.cer_ctc.ave.pth").stat().st_mtime_ns
              for run in (recipe / "exp").glob("asr_*_seed*")}
    assert len(models) == len(SYSTEMS) * len(SEEDS)
    decoded = (recipe / "exp" / "asr_gmot_seed0" / "decode_test" / "text").stat().st_mtime_ns
    control = (recipe / "exp" / "teacher_plm_control" / "model.safetensors").stat().st_mtime_ns
    again = run_demo(recipe, "--stage", "1", "--stop_stage", "7", "--systems", " ".join(SYSTEMS),
                     "--seeds", " ".join(map(str, SEEDS)))
    assert again.returncode == 0, again.stdout[-3000:]
    assert "trained, kept" in again.stdout and "exists, kept" in again.stdout
    for run, mtime in models.items():
        assert (run / "valid.cer_ctc.ave.pth").stat().st_mtime_ns == mtime
    assert (recipe / "exp" / "asr_gmot_seed0" / "decode_test" / "text").stat().st_mtime_ns == decoded
    assert (recipe / "exp" / "teacher_plm_control" / "model.safetensors").stat().st_mtime_ns == control


@pytest.mark.slow
@demo_test
def test_pack_stage_packs_a_run_without_its_teacher(demo):
    """Stage 10 (asr.sh's stage 14): ESPnet's archive of a trained run, the
    teacher's local path replaced by its directory's name, the statistics in."""
    import zipfile

    recipe, _ = demo
    done = run_demo(recipe, "--stage", "10", "--stop_stage", "10", "--systems", "gmot",
                    "--seeds", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with zipfile.ZipFile(recipe / "exp" / "packed" / "asr_gmot_seed0.zip") as pack:
        meta = yaml.safe_load(pack.read("meta.yaml"))
        config = yaml.safe_load(pack.read(meta["yaml_files"]["asr_train_config"]))
        names = pack.namelist()
    assert config["model"] == "gmot"
    teacher = config["model_conf"]["plm_conf"]["name_or_path"]
    assert "/" not in teacher and not teacher.startswith("exp"), teacher
    assert any(name.endswith("feats_stats.npz") for name in names), names
    assert not [n for n in names if n.endswith((".safetensors", "vocab.txt"))], names


@pytest.mark.slow
@demo_test
def test_teacher_axis_reuses_the_demos_runs_and_trains_the_rest(demo):
    """local/teacher_axis.py on the tiny demo (stage 2's teacher: 30 steps): the
    untrained teacher's GM-OT is gmot_control's run and the 30-step one the demo's
    own; only the 10-step teacher and GM-OT with it are trained. Its table agrees
    with stage 9's RESULTS.md on the runs they share."""
    recipe, _ = demo
    control = json.loads((recipe / "exp" / "teacher_plm_control" / "mlm_eval.json").read_text())
    assert control["steps"] == 0 and 0.0 <= control["heldout_people_daily"]["accuracy"] < 0.05
    kept = {run: (recipe / "exp" / run / "valid.cer_ctc.ave.pth").stat().st_mtime_ns
            for run in ("asr_gmot_seed0", "asr_gmot_control_seed3", "asr_baseline_seed0")}
    stage9 = results_table((recipe / "RESULTS.md").read_text(encoding="utf-8"))
    env = dict(os.environ, PATH=PATH, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "local/teacher_axis.py", "--steps", "0 10 30", "--systems", "gmot",
         "--seeds", "0 3", "--max_epoch", "1"],
        cwd=recipe, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for run, mtime in kept.items():
        assert (recipe / "exp" / run / "valid.cer_ctc.ave.pth").stat().st_mtime_ns == mtime, run
    trained = sorted(p.name for p in (recipe / "exp").glob("asr_gmot_plm_steps-*"))
    assert trained == ["asr_gmot_plm_steps-10_seed0", "asr_gmot_plm_steps-10_seed3"]
    assert json.loads((recipe / "exp" / "teacher_plm_steps10" / "mlm_eval.json").read_text())["steps"] == 10
    axis = (recipe / "teacher_axis" / "RESULTS.md").read_text(encoding="utf-8")
    test_rows = [line for line in axis[axis.index("## test"):].splitlines() if line.startswith("| GM-OT")]
    assert [row.split(" | ")[1] for row in test_rows] == ["0", "10", "30"]
    assert test_rows[0].split(" | ")[3] == stage9[NAMES["gmot_control"]]["test CER (%)"]
    assert test_rows[2].split(" | ")[3] == stage9[NAMES["gmot"]]["test CER (%)"]
    assert (recipe / "teacher_axis" / "teacher_strength.png").stat().st_size > 0
    assert "## Teacher strength" in (recipe / "RESULTS.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("options, message", [
    (["--max_epochs", "3"], "unknown option --max_epochs"),
    (["--seeds", "0 x"], "--seeds takes non-negative integers, got 'x'"),
    (["--seeds", " "], "--seeds is empty"),
    (["--systems", "baseline gmot_typo"], "'gmot_typo' but conf/train_asr_gmot_typo.yaml does not exist"),
    (["--tag", "a b"], "--tag 'a b' may hold only"),
])
def test_bad_option_is_named(options, message):
    done = subprocess.run(["bash", str(RECIPE / "run.sh"), *options], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr


def test_control_differs_from_gmot_only_in_its_teacher():
    """gmot_control must be GM-OT with the untrained teacher and nothing else."""
    gmot = yaml.safe_load((RECIPE / "conf" / "train_asr_gmot.yaml").read_text())
    control = yaml.safe_load((RECIPE / "conf" / "train_asr_gmot_control.yaml").read_text())
    assert control["model_conf"]["plm_conf"].pop("name_or_path") == "exp/teacher_plm_control"
    assert gmot["model_conf"]["plm_conf"].pop("name_or_path") == "exp/teacher_plm"
    assert control == gmot
    # run.sh's stage 2 writes that teacher.
    assert "--control_dir exp/teacher_plm_control" in (RECIPE / "run.sh").read_text()
