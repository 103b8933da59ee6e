"""The local/ steps that the AISHELL-1 recipe's run.sh runs before asr.sh
(``egs2/aishell/asr_gmot/local``), each on its own, and run.sh's calls of them.

``local/dump_fbank_pitch.sh`` and ``local/plm_cache.sh`` run in a recipe set up
in the stand-in ESPnet checkout of ``aishell_standin`` (they source Kaldi's
``utils/parse_options.sh`` through its link) with a recording ``--python``: it
logs every call, stands in for the two dump modules and runs everything else
with this interpreter, so no features or PLM states are computed here (the slow
tests of test_aishell_recipe.py compute them through run.sh).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import yaml

from tests.recipes.aishell_standin import (
    RECIPE,
    copy_recipe,
    final_options,
    make_asr1,
    make_espnet_root,
    run,
)

LOCAL = RECIPE / "local"

RECORDER = """#!/usr/bin/env bash
# --python stand-in: logs the call; the dump modules only leave their mark.
echo "$*" >> {calls}
case "$1 $2" in
    "-m espnet_gmot.bin.dump_fbank_pitch")
        dst="${{!#}}"; mkdir -p "$dst"; echo fbank_pitch > "$dst/feats_type"; exit 0 ;;
    "-m espnet_gmot.bin.dump_plm_states") exit "${{FAIL_DUMP:-0}}" ;;
esac
exec {python} "$@"
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    """A recipe set up by local/setup.sh in a stand-in ESPnet checkout."""
    espnet = make_espnet_root(tmp_path / "espnet")
    make_asr1(espnet / "egs2" / "aishell" / "asr1")
    recipe = copy_recipe(espnet / "egs2" / "aishell" / "asr_gmot")
    run(["local/setup.sh"], recipe)
    return recipe


@pytest.fixture
def recorder(tmp_path) -> Path:
    path = tmp_path / "python_recorder"
    path.write_text(RECORDER.format(calls=tmp_path / "python_calls.txt", python=sys.executable))
    path.chmod(0o755)
    return path


def calls(recorder: Path, module: str = "") -> List[List[str]]:
    """The recorded calls (split into words) of one module, or all of them."""
    log = recorder.parent / "python_calls.txt"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split() for line in lines if line.startswith(f"-m {module}")]


# ------------------------------------------------------ local/audio_format.sh ----


def audio_format(directory: Path, check: bool = True):
    return run([LOCAL / "audio_format.sh", directory], directory.parent, check=check)


def test_audio_format_of_a_raw_dump(tmp_path):
    dump = tmp_path / "train_sp"
    dump.mkdir()
    (dump / "wav.scp").write_text("utt1 dump/raw/org/train_sp/data/format.1/data_wav.ark:17\n")
    assert audio_format(dump).stdout == "flac.ark\n"  # asr1's dump: asr.sh reads kaldi_ark
    (dump / "wav.scp").write_text("utt1 dump/raw/org/train_sp/data/format.1/utt1.flac\n")
    assert audio_format(dump).stdout == "flac\n"  # sound files
    (dump / "audio_format").write_text("wav\n")
    assert audio_format(dump).stdout == "wav\n"  # what asr.sh's stage 3 recorded wins

    proc = audio_format(tmp_path / "nowhere", check=False)
    assert proc.returncode != 0 and "nor" in proc.stderr and proc.stdout == ""
    proc = run([LOCAL / "audio_format.sh"], tmp_path, check=False)
    assert proc.returncode != 0 and "Usage" in proc.stderr
    proc = run([LOCAL / "audio_format.sh", "--help"], tmp_path)
    assert "Usage" in proc.stderr and proc.stdout == ""


# -------------------------------------------------- local/dump_fbank_pitch.sh ----


def test_fbank_pitch_dump_of_the_missing_directories_only(recipe, recorder):
    done = recipe / "dump" / "fbank_pitch" / "dev"
    done.mkdir(parents=True)
    (done / "feats_type").write_text("fbank_pitch\n")
    proc = run(["local/dump_fbank_pitch.sh", "--python", recorder, "--nj", "3", "dump",
                "train_sp", "dev", "org/dev", "test"], recipe)
    assert calls(recorder) == [
        ["-m", "espnet_gmot.bin.dump_fbank_pitch", "--nj", "3", f"dump/raw/{dset}", f"dump/fbank_pitch/{dset}"]
        for dset in ("train_sp", "org/dev", "test")
    ]
    assert "fbank_pitch dump (Kaldi-free): dump/raw/test -> dump/fbank_pitch/test" in proc.stdout
    # now complete: nothing to do
    run(["local/dump_fbank_pitch.sh", "--python", recorder, "dump", "train_sp", "dev", "org/dev", "test"],
        recipe)
    assert len(calls(recorder)) == 3


@pytest.mark.parametrize("case, message", [
    ("linked", "dump/fbank_pitch (a link to asr1's dump) has no test, which asr.sh reads; "
               "complete it in asr1, or use --feats_type raw --frontend fbank_pitch"),
    ("no_raw", "dump/fbank_pitch/test (read by asr.sh) is missing and there is no "
               "dump/raw/test/wav.scp to compute it from"),
    ("ark", "dump/raw/test/wav.scp does not list plain audio files (first entry: "
            "'dump/raw/test/data/format.1/data_wav.ark:17')"),
])
def test_fbank_pitch_dump_refusals(tmp_path, recorder, case, message):
    espnet = make_espnet_root(tmp_path / "espnet")
    asr1 = make_asr1(espnet / "egs2" / "aishell" / "asr1", audio="flac.ark" if case == "ark" else "flac")
    if case == "linked":  # asr1 has an fbank_pitch dump (its Kaldi stage 3), without test
        (asr1 / "dump" / "fbank_pitch" / "dev").mkdir(parents=True)
    if case == "no_raw":
        (asr1 / "dump" / "raw" / "test" / "wav.scp").unlink()
    recipe = copy_recipe(espnet / "egs2" / "aishell" / "asr_gmot")
    run(["local/setup.sh"], recipe)
    proc = run(["local/dump_fbank_pitch.sh", "--python", recorder, "dump", "test"], recipe, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    if case == "ark":
        assert "--frontend fbank_pitch" in proc.stderr and "--audio_format flac" in proc.stderr
    assert calls(recorder) == []
    assert not (asr1 / "dump" / "fbank_pitch" / "test").exists()


def test_local_scripts_take_kaldi_style_options(recipe):
    for script in ("local/dump_fbank_pitch.sh", "local/plm_cache.sh"):
        proc = run([script, "--help"], recipe)
        assert f"Usage: {script} [--python python3]" in proc.stderr
        proc = run([script, "dump"], recipe, check=False)  # too few arguments
        assert proc.returncode != 0 and "Usage:" in proc.stderr
        proc = run([script, "--njobs", "2", "dump", "test"], recipe, check=False)
        assert proc.returncode != 0 and "invalid option --njobs" in proc.stderr
    proc = run(["local/plm_cache.sh", "--compute", "yes", "c", "f", "d", "t", "v"], recipe, check=False)
    assert proc.returncode != 0 and '"true" or "false"' in proc.stderr


# -------------------------------------------------------- local/plm_cache.sh ----


def plm_cache(recipe, recorder, config="conf/train_asr_gmot.yaml", *options, check=True, **env):
    return run(["local/plm_cache.sh", "--python", recorder, *options, config, "dump/raw",
                "dump/plm_states", "train_sp", "dev"], recipe, check=check, **env)


def test_plm_cache_of_the_train_and_valid_sets(recipe, recorder):
    proc = plm_cache(recipe, recorder, "conf/train_asr_gmot.yaml", "--plm_cache_opts", "--dtype float16 --batch_size 4")
    cache = "dump/plm_states/bert-base-chinese"  # the config's plm_conf.name_or_path
    assert calls(recorder, "espnet_gmot.bin.dump_plm_states") == [
        ["-m", "espnet_gmot.bin.dump_plm_states", "--text", f"dump/raw/{dset}/text",
         "--asr_config", "conf/train_asr_gmot.yaml", "--plm", "bert-base-chinese",
         "--output_dir", f"{cache}/{dset}", "--dtype", "float16", "--batch_size", "4"]
        for dset in ("train_sp", "dev")
    ]
    # stdout is only the asr_train arguments (run.sh reads them); messages go to stderr
    assert proc.stdout == (
        f"--train_data_path_and_name_and_type {cache}/train_sp/plm_states.scp,plm_states,kaldi_ark "
        f"--valid_data_path_and_name_and_type {cache}/dev/plm_states.scp,plm_states,kaldi_ark "
        "--allow_variable_data_keys true\n"
    )
    assert f"PLM-state cache (bert-base-chinese): dump/raw/dev/text -> {cache}/dev" in proc.stderr


def test_plm_cache_options(recipe, recorder):
    # --plm: a local directory names the cache by its last component
    proc = plm_cache(recipe, recorder, "conf/train_asr_totcakt.yaml", "--plm", "/models/my_bert/")
    assert [c[c.index("--output_dir") + 1] for c in calls(recorder, "espnet_gmot.bin.dump_plm_states")] == \
        ["dump/plm_states/my_bert/train_sp", "dump/plm_states/my_bert/dev"]
    assert [c[c.index("--plm") + 1] for c in calls(recorder, "espnet_gmot.bin.dump_plm_states")] == \
        ["/models/my_bert/"] * 2
    # --compute false (stages 12-13): nothing computed, the cache's data type read
    # from its manifest (npy for float16)
    manifest = recipe / "dump" / "plm_states" / "my_bert" / "train_sp" / "plm_cache.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"dtype": "float16", "data_type": "npy"}))
    proc = plm_cache(recipe, recorder, "conf/train_asr_totcakt.yaml", "--plm", "/models/my_bert",
                     "--compute", "false")
    assert len(calls(recorder, "espnet_gmot.bin.dump_plm_states")) == 2
    assert "my_bert/train_sp/plm_states.scp,plm_states,npy " in proc.stdout
    assert "my_bert/dev/plm_states.scp,plm_states,kaldi_ark " in proc.stdout


def test_plm_cache_directory_names_how_the_teacher_is_read(recipe, recorder):
    config = yaml.safe_load((recipe / "conf" / "train_asr_gmot.yaml").read_text())
    config["model_conf"]["plm_conf"].update(hidden_layer=-2, text_case="lower")
    (recipe / "conf" / "layer.yaml").write_text(yaml.safe_dump(config))
    plm_cache(recipe, recorder, "conf/layer.yaml")
    plm_cache(recipe, recorder)  # the stock config's cache: its own directory
    assert [c[c.index("--output_dir") + 1] for c in calls(recorder, "espnet_gmot.bin.dump_plm_states")] == [
        "dump/plm_states/bert-base-chinese_hidden_layer_-2_text_case_lower/train_sp",
        "dump/plm_states/bert-base-chinese_hidden_layer_-2_text_case_lower/dev",
        "dump/plm_states/bert-base-chinese/train_sp", "dump/plm_states/bert-base-chinese/dev",
    ]


def test_plm_cache_ignored_without_a_plm_and_refused_without_its_name(recipe, recorder):
    for system in ("baseline", "hybrid_baseline"):
        proc = plm_cache(recipe, recorder, f"conf/train_asr_{system}.yaml")
        assert proc.stdout == ""
        assert (f"--plm_cache true ignored: conf/train_asr_{system}.yaml has model: espnet, "
                "which uses no PLM") in proc.stderr
    assert calls(recorder, "espnet_gmot.bin.dump_plm_states") == []

    config = yaml.safe_load((recipe / "conf" / "train_asr_gmot.yaml").read_text())
    del config["model_conf"]["plm_conf"]
    (recipe / "conf" / "no_plm.yaml").write_text(yaml.safe_dump(config))
    proc = plm_cache(recipe, recorder, "conf/no_plm.yaml", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "--plm_cache true: conf/no_plm.yaml has no model_conf.plm_conf.name_or_path; give --plm" in proc.stderr
    plm_cache(recipe, recorder, "conf/no_plm.yaml", "--plm", "bert-base-chinese")

    proc = plm_cache(recipe, recorder, check=False, FAIL_DUMP="1")  # a failed dump stops it
    assert proc.returncode != 0 and proc.stdout == ""


# ---------------------------------------------------- local/config_value.py ----


def config_value(*args: str, cwd: Path):
    return subprocess.run([sys.executable, LOCAL / "config_value.py", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_config_value(tmp_path):
    (tmp_path / "c.yaml").write_text("model: gmot\nmodel_conf:\n  plm_conf:\n    name_or_path: /m/bert\n"
                                     "  asr_weight: 0.3\nencoder: null\n")
    (tmp_path / "empty.yaml").write_text("")
    for args, out in [
        (("c.yaml", "model"), "gmot"),
        (("c.yaml", "model_conf.plm_conf.name_or_path"), "/m/bert"),
        (("c.yaml", "model_conf.asr_weight"), "0.3"),
        (("c.yaml", "model_conf.plm_conf.revision"), ""),
        (("c.yaml", "model_conf.asr_weight.x", "-"), "-"),
        (("c.yaml", "encoder", "conformer"), "conformer"),  # null reads as missing
        (("empty.yaml", "model", "espnet"), "espnet"),
    ]:
        proc = config_value(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stdout) == (0, out + "\n"), (args, proc.stderr)
    proc = config_value("c.yaml", cwd=tmp_path)
    assert proc.returncode != 0 and "usage" in proc.stderr
    assert config_value("none.yaml", "model", cwd=tmp_path).returncode != 0


# ------------------------------------------------ run.sh's calls of local/ ----


def test_run_sh_calls_the_fbank_pitch_dump_for_every_directory_asr_sh_reads(recipe, recorder):
    run(["./run.sh", "--feats_type", "fbank_pitch", "--python", recorder, "--fbank_nj", "2"], recipe)
    assert [c[3:] for c in calls(recorder, "espnet_gmot.bin.dump_fbank_pitch")] == [
        ["2", f"dump/raw/{dset}", f"dump/fbank_pitch/{dset}"] for dset in ("train_sp", "dev", "org/dev", "test")
    ]
    opts = final_options(recipe)
    assert (opts["feats_type"], opts["eval_valid_set"]) == ("fbank_pitch", "true")
    assert "audio_format" not in opts
    # without dev among the test sets asr.sh decodes no org/dev; each set once
    shutil.rmtree(recipe / "dump" / "fbank_pitch")
    run(["./run.sh", "--feats_type", "fbank_pitch", "--python", recorder, "--test_sets", "test test"],
        recipe)
    assert [c[-1] for c in calls(recorder, "espnet_gmot.bin.dump_fbank_pitch")[4:]] == \
        ["dump/fbank_pitch/train_sp", "dump/fbank_pitch/dev", "dump/fbank_pitch/test"]
    assert final_options(recipe)["eval_valid_set"] == "false"


def test_run_sh_merges_the_plm_cache_arguments(recipe, recorder):
    cache = "dump/plm_states/bert-base-chinese"
    plm_args = (f"--train_data_path_and_name_and_type {cache}/train_sp/plm_states.scp,plm_states,kaldi_ark "
                f"--valid_data_path_and_name_and_type {cache}/dev/plm_states.scp,plm_states,kaldi_ark "
                "--allow_variable_data_keys true")
    run(["./run.sh", "--plm_cache", "true", "--python", recorder, "--asr_args", "--max_epoch 1",
         "--frontend", "fbank_pitch", "--plm_cache_opts", "--device cuda"], recipe)
    assert final_options(recipe)["asr_args"] == f"--frontend fbank_pitch {plm_args} --max_epoch 1"
    dumps = calls(recorder, "espnet_gmot.bin.dump_plm_states")
    assert [c[-2:] for c in dumps] == [["--device", "cuda"]] * 2
    # stage 12 on: the arguments without computing anything
    run(["./run.sh", "--plm_cache", "true", "--python", recorder, "--stage", "12"], recipe)
    assert final_options(recipe)["asr_args"] == plm_args
    assert len(calls(recorder, "espnet_gmot.bin.dump_plm_states")) == 2
    # the baseline uses no PLM
    proc = run(["./run.sh", "--plm_cache", "true", "--python", recorder, "--system", "baseline"], recipe)
    assert "asr_args" not in final_options(recipe) and "--plm_cache true ignored" in proc.stderr
    proc = run(["./run.sh", "--plm_cache", "yes", "--python", recorder], recipe, check=False)
    assert proc.returncode != 0 and "--plm_cache yes: choose true or false" in proc.stderr


def test_run_sh_help_lists_its_options_and_has_no_embedded_python(tmp_path):
    proc = run([RECIPE / "run.sh", "--help"], tmp_path)  # works before local/setup.sh
    text = (RECIPE / "run.sh").read_text()
    variables = text[text.index("\nstage=") + 1:text.index("\nexpdir=exp\n") + 11]
    names = [line.split("=")[0] for line in variables.splitlines() if line[:1].isalpha()]
    assert len(names) == 26 and names[0] == "stage" and names[-1] == "expdir"
    for name in names:
        assert f"\n{name}=" in "\n" + proc.stdout, name
    assert "--method is its old name" in proc.stdout and "set -euo" not in proc.stdout
    assert "<<" not in text  # no heredocs; Python lives in files
    assert [line for line in text.splitlines() if " -c " in line] == [
        line for line in text.splitlines() if '-c "import espnet2, espnet_gmot"' in line]
