"""The demo's teacher-strength axis (egs2/synth_mandarin/asr_gmot/local/teacher_axis.py)
on hand-made teachers, runs and manifest: which run each teacher's system is, the
teachers' commands, the tables, intervals, reading, plot and RESULTS.md section,
and the errors for stale or missing work."""

import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

LOCAL_DIR = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot" / "local"
sys.path.insert(0, str(LOCAL_DIR))

import teacher_axis  # noqa: E402
import train_teacher_plm  # noqa: E402
from runs import embed_section  # noqa: E402

from tests.recipes.results_standin import (  # noqa: E402
    REFERENCES,
    UTT2SPK,
    sclite_result,
    table,
    write_homophone_manifest,
)

# Stage 2's marker: what train_teacher_plm.py records (the parser's options but the
# paths, and the text digests).
STAGE2 = {**{key: value for key, value in vars(train_teacher_plm.build_arg_parser().parse_args(
    ["--out_dir", "x"])).items() if key not in ("log_every", "out_dir", "pd_corpus", "corpus_manifest",
                                                 "exclude_sentences", "control_dir", "control_seed")},
          "train_text_sha256": "a" * 64, "heldout_text_sha256": "b" * 64, "format_version": 1}


def make_teacher(recipe: Path, path: str, steps: int, heldout: float, corpus: float,
                 minutes: float, **changes):
    directory = recipe / path
    directory.mkdir(parents=True)
    (directory / "mlm_eval.json").write_text(json.dumps({
        "heldout_people_daily": {"accuracy": heldout}, "corpus_dev_test_sentences": {"accuracy": corpus},
        "steps": steps, "train_minutes": minutes}))
    if steps:
        marker = {**STAGE2, "max_steps": steps, **changes}
        (directory / train_teacher_plm.DONE_MARKER).write_text(json.dumps(marker))


def make_run(exp: Path, name: str, teacher: str | None, hypotheses: str, seed: int = 0,
             seconds: int = 60, max_epoch: int = 4):
    """A finished run; ``hypotheses``: U1's text (U2 always right), on dev and test."""
    directory = exp / f"{name}_seed{seed}"
    directory.mkdir(parents=True)
    config = {"model": "espnet" if teacher is None else "gmot", "max_epoch": max_epoch}
    if teacher is not None:
        config["model_conf"] = {"plm_conf": {"name_or_path": teacher}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "train_seconds").write_text(f"{seconds}\n")
    (directory / ".done").touch()
    for set_name in ("dev", "test"):
        score = directory / f"decode_{set_name}" / "score_cer"
        score.mkdir(parents=True)
        (score / "result.txt").write_text(
            sclite_result({"U1": hypotheses, "U2": REFERENCES["U2"]}), encoding="utf-8")


@pytest.fixture
def recipe(tmp_path):
    """Stage 2's teacher (1600 steps), its control and a 400-step teacher; the baseline
    and GM-OT with each teacher, seed 0. U1 is 他是老师: 他 (ta1) and 师 (shi1) are
    homophone positions (a train sentence has 她 and 诗), U2 has none."""
    recipe = tmp_path / "asr_gmot"
    make_teacher(recipe, "exp/teacher_plm", 1600, 0.176, 0.136, 2.0)
    make_teacher(recipe, "exp/teacher_plm_control", 0, 0.0003, 0.0, 0.0)
    make_teacher(recipe, "exp/teacher_plm_steps400", 400, 0.044, 0.030, 0.5)
    exp = recipe / "exp"
    make_run(exp, "asr_baseline", None, "她是老诗")                      # 2 wrong homophones
    make_run(exp, "asr_gmot_control", "exp/teacher_plm_control", "她是老师")  # 1
    make_run(exp, "asr_gmot_plm_steps-400", "exp/teacher_plm_steps400", "他是老诗")  # 1
    make_run(exp, "asr_gmot", "exp/teacher_plm", "他是老师")              # none
    for set_name in ("dev", "test"):
        data = recipe / "data" / set_name
        data.mkdir(parents=True)
        (data / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in UTT2SPK.items()))
    write_homophone_manifest(recipe / teacher_axis.MANIFEST)
    (recipe / "RESULTS.md").write_text("# Results\n\n## Errors at homophone positions\n\n"
                                       "| a |\n\n## Corpus\n\nfacts\n")
    return recipe


def report(recipe: Path, *options: str):
    teacher_axis.main(["--report_only", "--exp", str(recipe / "exp"), "--systems", "gmot",
                       "--steps", "0 400 1600", "--seeds", "0", "--out_dir", str(recipe / "teacher_axis"),
                       "--results", str(recipe / "RESULTS.md"), *options])
    return (recipe / "teacher_axis" / "RESULTS.md").read_text(encoding="utf-8")


def test_each_teacher_is_the_demos_run_where_there_is_one():
    recipe = teacher_axis.RECIPE
    run = teacher_axis.axis_run
    # stage 2's teacher: the demo's own run; untrained: GM-OT's control config
    assert run(recipe, "gmot", 1600, 1600) == teacher_axis.AxisRun("gmot", "", "exp/teacher_plm")
    assert run(recipe, "gmot", 0, 1600) == teacher_axis.AxisRun(
        "gmot_control", "", "exp/teacher_plm_control")
    # OT-BERT has no control config: a tagged run reads the control teacher
    untrained = run(recipe, "otbert", 0, 1600)
    assert untrained == teacher_axis.AxisRun("otbert", "plm_steps-0", "exp/teacher_plm_control")
    assert untrained.command(["0", "1"], ["--max_epoch", "2"]) == [
        "bash", "run.sh", "--stage", "6", "--stop_stage", "8", "--systems", "otbert",
        "--seeds", "0 1", "--tag", "plm_steps-0",
        "--train_args", "--model_conf plm_conf.name_or_path=exp/teacher_plm_control",
        "--max_epoch", "2"]
    assert run(recipe, "gmot", 400, 1600).teacher == "exp/teacher_plm_steps400"
    assert run(recipe, "gmot", 400, 1600).tag == "plm_steps-400"
    # With another stage 2 budget, the 1600-step teacher is an axis teacher of its own.
    assert run(recipe, "gmot", 1600, 800) == teacher_axis.AxisRun(
        "gmot", "plm_steps-1600", "exp/teacher_plm_steps1600")


def test_teacher_command_is_stage_2s_but_for_the_steps():
    config = {**STAGE2, "max_steps": 1600, "num_layers": 3, "lr": 0.0005}
    command = teacher_axis.teacher_command(config, 6400, "python3", "exp/teacher_plm_steps6400")
    assert command[:2] == ["python3", "local/train_teacher_plm.py"]
    parsed = vars(train_teacher_plm.build_arg_parser().parse_args(command[2:]))
    assert parsed["max_steps"] == 6400 and parsed["out_dir"] == Path("exp/teacher_plm_steps6400")
    assert parsed["corpus_manifest"] == Path(teacher_axis.MANIFEST)
    assert {k: parsed[k] for k in config if k in parsed and k != "max_steps"} == {
        k: v for k, v in config.items() if k in parsed and k != "max_steps"}
    with_control = teacher_axis.teacher_command(config, 1600, "python3", "exp/teacher_plm",
                                                "exp/teacher_plm_control")
    assert with_control[-2:] == ["--control_dir", "exp/teacher_plm_control"]


def test_tables_intervals_and_reading_from_hand_made_runs(recipe):
    results = report(recipe)
    assert results.startswith("# Teacher strength\n\nWritten by `local/teacher_axis.py`.")
    assert table(results, "## Teachers") == [
        "| 0 | 0.0 | 0.000 | 0.000 | exp/teacher_plm_control |",
        "| 400 | 0.5 | 0.044 | 0.030 | exp/teacher_plm_steps400 |",
        "| 1600 | 2.0 | 0.176 | 0.136 | exp/teacher_plm |",
    ]
    # CER: baseline 2 of 7 errors, control and 400 steps 1, 1600 steps none. Wrong
    # homophone given the right syllable: 2 of 2, 1 of 2, 1 of 2, 0 of 2. Two
    # utterances: a resample is {U1,U1}, {U1,U2} or {U2,U2}; U2 has no homophone
    # position, so {U2,U2} has no share and is dropped.
    assert table(results, "## test") == [
        "| Conformer-CTC (stock ESPnet) | - | - | 28.6 | - | - | 100.0 | 100.0 | - | - |",
        "| GM-OT | 0 | 0.000 | 14.3 | -14.3 (-25.0, +0.0) | - | 50.0 | 50.0 | -50.0 (-50.0, -50.0) | - |",
        "| GM-OT | 400 | 0.044 | 14.3 | -14.3 (-25.0, +0.0) | +0.0 (+0.0, +0.0) | 50.0 | 50.0 "
        "| -50.0 (-50.0, -50.0) | +0.0 (+0.0, +0.0) |",
        "| GM-OT | 1600 | 0.176 | 0.0 | -28.6 (-50.0, +0.0) | -14.3 (-25.0, +0.0) | 0.0 | 0.0 "
        "| -100.0 (-100.0, -100.0) | -50.0 (-50.0, -50.0) |",
    ]
    assert ("- GM-OT, test: wrong-homophone share below the untrained teacher's (95% interval "
            "under 0) with 1600 steps (MLM 0.176); CER below the untrained teacher's with none "
            "of the trained teachers.") in results
    assert ("Runs: GM-OT with exp/teacher_plm_control: exp/asr_gmot_control_seed<seed>; GM-OT with "
            "exp/teacher_plm_steps400: exp/asr_gmot_plm_steps-400_seed<seed>; GM-OT with "
            "exp/teacher_plm: exp/asr_gmot_seed<seed>.") in results
    # 2.5 min of teachers, 3 runs of 60 s
    assert "2 min of teacher pretraining and 3 min of transfer-system training" in results
    assert (recipe / "teacher_axis" / "teacher_strength.png").read_bytes()[:4] == b"\x89PNG"
    # The demo's RESULTS.md: the section before the corpus, the plot relative to it.
    demo = (recipe / "RESULTS.md").read_text(encoding="utf-8")
    assert demo.index("| a |") < demo.index("## Teacher strength") < demo.index("## Corpus")
    assert "### test" in demo and "](teacher_axis/teacher_strength.png)" in demo
    report(recipe)  # a second report replaces the section
    assert (recipe / "RESULTS.md").read_text(encoding="utf-8") == demo


def test_several_seeds_average_per_utterance(recipe):
    exp = recipe / "exp"
    make_run(exp, "asr_baseline", None, "他是老师", seed=1)
    make_run(exp, "asr_gmot_control", "exp/teacher_plm_control", "她是老诗", seed=1)
    make_run(exp, "asr_gmot_plm_steps-400", "exp/teacher_plm_steps400", "他是老诗", seed=1)
    make_run(exp, "asr_gmot", "exp/teacher_plm", "他是老师", seed=1)
    results = report(recipe, "--seeds", "0 1")
    test = table(results, "## test")
    # baseline: 28.6 and 0.0 -> 14.3 ± 20.2; shares 100 and 0 -> 50.0 ± 70.7
    assert test[0] == ("| Conformer-CTC (stock ESPnet) | - | - | 14.3 ± 20.2 | - | - | 50.0 ± 70.7 "
                       "| 50.0 ± 70.7 | - | - |")
    # control: 1 then 2 wrong of 2 -> per-utterance mean 1.5 of 2 = 75%; baseline 1 of 2
    assert test[1].startswith("| GM-OT | 0 | 0.000 | 21.4 ± 10.1 | +7.1 ")
    assert "| 75.0 ± 35.4 | +25.0 (+25.0, +25.0) | - |" in test[1]
    # --seeds_of gives a system its own seeds
    results = report(recipe, "--seeds", "0 1", "--seeds_of", "gmot=1")
    assert "Conformer-CTC (stock ESPnet) seeds 0, 1; GM-OT seeds 1." in results
    assert table(results, "## test")[1].startswith("| GM-OT | 0 | 0.000 | 28.6 | +14.3 ")


def test_a_system_without_a_right_syllable_has_no_share(recipe):
    """A baseline that never gets a homophone's syllable right (他->不, 师->人) has no
    wrong-homophone share, and nothing to compare shares with."""
    shutil.rmtree(recipe / "exp" / "asr_baseline_seed0")
    make_run(recipe / "exp", "asr_baseline", None, "不是老人")
    test = table(report(recipe), "## test")
    assert test[0] == "| Conformer-CTC (stock ESPnet) | - | - | 28.6 | - | - | 100.0 | - | - | - |"
    assert test[3] == ("| GM-OT | 1600 | 0.176 | 0.0 | -28.6 (-50.0, +0.0) | -14.3 (-25.0, +0.0) "
                       "| 0.0 | 0.0 | - | -50.0 (-50.0, -50.0) |")


def test_missing_run_names_the_run_sh_command(recipe):
    (recipe / "exp" / "asr_gmot_plm_steps-400_seed0" / ".done").unlink()
    with pytest.raises(SystemExit) as error:
        report(recipe)
    message = str(error.value)
    assert "asr_gmot_plm_steps-400_seed0/.done is missing" in message
    assert shlex.join(["bash", "run.sh", "--stage", "6", "--stop_stage", "8", "--systems", "gmot",
                       "--seeds", "0", "--tag", "plm_steps-400", "--train_args",
                       "--model_conf plm_conf.name_or_path=exp/teacher_plm_steps400"]) in message


def test_a_run_of_another_teacher_or_epochs_is_refused(recipe):
    config = recipe / "exp" / "asr_gmot_plm_steps-400_seed0" / "config.yaml"
    config.write_text(yaml.safe_dump({"model": "gmot", "max_epoch": 4,
                                      "model_conf": {"plm_conf": {"name_or_path": "exp/teacher_plm"}}}))
    with pytest.raises(SystemExit, match=r"read the teacher exp/teacher_plm, but the axis takes "
                                         r"this run for exp/teacher_plm_steps400; move .* aside"):
        report(recipe)
    with pytest.raises(SystemExit, match=r"asr_baseline_seed0 was trained for max_epoch 4 but the "
                                         r"axis trains for 2: give --max_epoch 4"):
        report(recipe, "--max_epoch", "2")


def test_teachers_must_be_stage_2s_and_step_bounded(recipe):
    marker = recipe / "exp" / "teacher_plm_steps400" / train_teacher_plm.DONE_MARKER
    marker.write_text(json.dumps({**STAGE2, "max_steps": 400, "num_layers": 4}))
    with pytest.raises(SystemExit, match=r"teacher_plm_steps400 is not stage 2's teacher with 400 "
                                         r"steps \(it differs in num_layers\); remove"):
        report(recipe)
    stage2 = recipe / "exp" / "teacher_plm" / train_teacher_plm.DONE_MARKER
    stage2.write_text(json.dumps({**STAGE2, "max_steps": 1600, "max_minutes": 3.0}))
    with pytest.raises(SystemExit, match=r"trained to a wall-clock budget \(--plm_minutes 3.0\)"):
        report(recipe)
    stage2.unlink()
    with pytest.raises(SystemExit, match=r"teacher_plm/.teacher_done.json is missing \(stage 2's "
                                         r"teacher\): run run.sh --stop_stage 5 first"):
        report(recipe)


@pytest.mark.parametrize("options, message", [
    (["--steps", "400 1600"], r"has no 0: the untrained teacher is the axis's reference"),
    (["--steps", "0 x"], r"--steps takes non-negative integers, got '0 x'"),
    (["--steps", "0 0"], r"--steps takes distinct non-negative integers"),
    (["--systems", "baseline"], r"name transfer systems"),
    (["--systems", "nosuch"], r"conf/train_asr_nosuch.yaml does not exist"),
    (["--seeds_of", "otbert=1"], r"--seeds_of 'otbert=1' is not SYSTEM=SEEDS with SYSTEM one of "
                                 r"baseline, gmot"),
    (["--seeds", "0 a"], r"--seeds takes distinct non-negative integers, got '0 a'"),
])
def test_bad_options_are_named(recipe, options, message):
    with pytest.raises(SystemExit, match=message):
        report(recipe, *options)


def test_training_only_into_the_recipes_exp(tmp_path):
    with pytest.raises(SystemExit, match=r"--exp .*: run.sh trains into .*another exp dir only "
                                         r"with --report_only"):
        teacher_axis.main(["--exp", str(tmp_path / "exp")])


def test_embed_section_replaces_or_inserts():
    text = "# R\n\n## A\n\na\n\n## Corpus\n\nc\n"
    inserted = embed_section(text, "## T", "## T\n\nt1\n")
    assert inserted == "# R\n\n## A\n\na\n\n## T\n\nt1\n\n## Corpus\n\nc\n"
    assert embed_section(inserted, "## T", "## T\n\nt2\n### sub\n\nx\n") == (
        "# R\n\n## A\n\na\n\n## T\n\nt2\n### sub\n\nx\n\n## Corpus\n\nc\n")
    assert embed_section("# R\n\n## A\na", "## T", "## T\nt") == "# R\n\n## A\na\n\n## T\nt\n"
