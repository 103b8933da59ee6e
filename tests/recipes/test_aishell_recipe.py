"""Tests of the AISHELL-1 recipe ``egs2/aishell/asr_gmot`` (setup, run.sh, configs).

No ESPnet checkout exists here, so a stand-in one is built in ``tmp_path``
(tests/recipes/aishell_standin.py): ``egs2/TEMPLATE/asr1/`` with an ``asr.sh``
that only records the arguments it receives (and sources the recipe's path.sh
and cmd.sh, like the real one), and an ``egs2/aishell/asr1`` "experiment" with
data/, dump/ and a token list.  No ESPnet or Kaldi code is copied.  The local/
scripts run.sh calls have their own tests in test_aishell_local.py.  The last test runs, for real, the Python
commands asr.sh stages 10-12 build from those recorded options (collect-stats,
training, decoding of ``model: gmot``) on the tiny corpus of ``tests/helpers``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest
import yaml

from espnet_gmot.kaldi_data import read_kaldi_map, read_text
from tests.helpers.tiny_asr import SENTENCES, make_tiny_bert, make_tiny_corpus
from tests.recipes.aishell_standin import (
    GENERATED,
    REAL_ESPNET_ROOT,
    RECIPE,
    build_with_asr_task,
    copy_recipe,
    final_options,
    listing,
    make_asr1,
    make_espnet_root,
    needs_real_asr_sh,
    recorded_args,
    run,
    setup_and_run,
)

# run.sh's default --inference ctc_greedy: stage 12 runs the greedy decoder.
GREEDY = "--asr_inference espnet_gmot.bin.asr_inference_ctc_greedy"
LAUNCH = f"{sys.executable} -m espnet_gmot.launch {GREEDY}"

# ----------------------------------------------------------------- helpers ----


def shell_scripts() -> List[Path]:
    return sorted(
        p for p in RECIPE.rglob("*.sh")
        if not p.is_symlink() and not (set(p.relative_to(RECIPE).parts) & GENERATED)
    )


@pytest.fixture
def standin(tmp_path):
    """(espnet_root, asr1_dir, recipe_dir) with the recipe copied into the tree."""
    espnet = make_espnet_root(tmp_path / "espnet")
    asr1 = make_asr1(espnet / "egs2" / "aishell" / "asr1")
    recipe = copy_recipe(espnet / "egs2" / "aishell" / "asr_gmot")
    return espnet, asr1, recipe


# --------------------------------------------------------- 1. shell lint ----


def test_every_script_parses_with_bash_n():
    scripts = shell_scripts()
    names = {str(p.relative_to(RECIPE)) for p in scripts}
    assert {"run.sh", "path.sh", "cmd.sh", "local/setup.sh", "local/path.sh", "local/dump_fbank_pitch.sh",
            "local/audio_format.sh", "local/plm_cache.sh"} <= names
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
    for script in ("run.sh", "local/setup.sh", "local/dump_fbank_pitch.sh", "local/audio_format.sh",
                   "local/plm_cache.sh", "local/config_value.py"):
        assert os.access(RECIPE / script, os.X_OK), f"{script} is not executable"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck binary not installed (apt-get install -y shellcheck)",
)
def test_shellcheck_clean():
    scripts = [str(p) for p in shell_scripts()]
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, cwd=RECIPE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------ configs ----


def load_conf(name: str) -> dict:
    with open(RECIPE / "conf" / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_configs_match_the_papers_setup():
    base = load_conf("train_asr_baseline.yaml")
    enc = base["encoder_conf"]
    assert base["encoder"] == "conformer"
    assert (enc["num_blocks"], enc["output_size"], enc["attention_heads"], enc["linear_units"],
            enc["cnn_module_kernel"], enc["input_layer"]) == (16, 256, 4, 2048, 15, "conv2d")
    assert enc["macaron_style"] and enc["use_cnn_module"]
    assert (enc["pos_enc_layer_type"], enc["activation_type"]) == ("rel_pos", "swish")
    assert base["model"] == "espnet" and "decoder" not in base
    assert base["model_conf"] == {"ctc_weight": 1.0, "lsm_weight": 0.0, "length_normalized_loss": False}
    assert (base["optim"], base["optim_conf"]["lr"]) == ("adam", 0.001)
    assert (base["scheduler"], base["scheduler_conf"]["warmup_steps"]) == ("warmuplr", 20000)
    assert (base["max_epoch"], base["keep_nbest_models"]) == (130, 10)
    assert base["best_model_criterion"][0] == ["valid", "cer_ctc", "min"]
    assert base["specaug"] == "specaug"

    expected = {"otbert": (0.0, 0.0), "totcakt": (0.0, 0.5), "gmot": (0.02, 0.5)}
    for method, (gw, rho) in expected.items():
        conf = load_conf(f"train_asr_{method}.yaml")
        mc = conf.pop("model_conf")
        assert conf.pop("model") == "gmot"
        assert {k: v for k, v in base.items() if k not in ("model", "model_conf")} == conf
        assert (mc["asr_weight"], mc["transfer_weight"], mc["lsm_weight"]) == (0.3, 1.0, 0.0)
        assert "ctc_weight" not in mc and "decoder" not in conf  # CTC-only, as the papers
        assert mc["plm_conf"] == {"name_or_path": "bert-base-chinese"}
        tc = mc["transfer_conf"]
        assert (tc["gw_weight"], tc["temporal_weight"]) == (gw, rho), method
        assert (tc["plm_dim"], tc["epsilon"], tc["fusion_scale"]) == (768, 0.1, 1.0)
        assert (tc["outer_iter"], tc["inner_iter"], tc["tol"], tc["gradient"]) == (10, 200, 1e-6, "envelope")

    dec = load_conf("decode_asr_ctc_greedy.yaml")
    assert (dec["beam_size"], dec["ctc_weight"], dec["lm_weight"], dec["penalty"]) == (1, 1.0, 0.0, 0.0)


def test_hybrid_configs_are_espnets_e_branchformer_setup_and_its_gmot_twin():
    """ESPnet's egs2/aishell/asr1/conf/tuning/train_asr_e_branchformer_e12_mlp1024_linear1024_mactrue_amp.yaml."""
    base = load_conf("train_asr_hybrid_baseline.yaml")
    enc, dec = base["encoder_conf"], base["decoder_conf"]
    assert (base["encoder"], base["decoder"], base["model"]) == ("e_branchformer", "transformer", "espnet")
    assert (enc["num_blocks"], enc["output_size"], enc["attention_heads"], enc["linear_units"],
            enc["cgmlp_linear_units"], enc["cgmlp_conv_kernel"], enc["merge_conv_kernel"],
            enc["input_layer"], enc["macaron_ffn"]) == (12, 256, 4, 1024, 1024, 31, 31, "conv2d", True)
    assert (dec["num_blocks"], dec["attention_heads"], dec["linear_units"]) == (6, 4, 2048)
    assert base["model_conf"] == {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False}
    assert (base["batch_type"], base["batch_bins"], base["max_epoch"], base["use_amp"]) == ("numel", 25000000, 60, True)
    assert (base["optim_conf"], base["scheduler_conf"]) == ({"lr": 0.001, "weight_decay": 1e-6}, {"warmup_steps": 35000})
    assert base["best_model_criterion"] == [["valid", "acc", "max"]] and base["keep_nbest_models"] == 10
    assert base["specaug_conf"]["num_time_mask"] == 10

    gmot = load_conf("train_asr_hybrid_gmot.yaml")
    mc = gmot.pop("model_conf")
    assert gmot.pop("model") == "gmot"
    assert {k: v for k, v in base.items() if k not in ("model", "model_conf")} == gmot
    assert {k: mc.pop(k) for k in list(base["model_conf"])} == base["model_conf"]  # ESPnet's, as stock
    paper = load_conf("train_asr_gmot.yaml")["model_conf"]
    assert mc == {k: paper[k] for k in ("asr_weight", "transfer_weight", "plm_conf", "transfer_conf")}

    decode = load_conf("decode_asr_hybrid.yaml")  # ESPnet's decode_asr_branchformer.yaml
    assert decode == {"beam_size": 10, "ctc_weight": 0.4, "lm_weight": 0.0, "penalty": 0.0,
                      "maxlenratio": 0.0, "minlenratio": 0.0}


@pytest.mark.parametrize("system", ["hybrid_baseline", "hybrid_gmot"])
def test_hybrid_configs_build_with_espnets_asr_task(tmp_path, system):
    model = build_with_asr_task(
        RECIPE / "conf" / f"train_asr_{system}.yaml",
        ["<blank>", "<unk>", *sorted(set("".join(SENTENCES))), "<sos/eos>"], "char", tmp_path)
    assert type(model.encoder).__name__ == "EBranchformerEncoder"
    assert type(model.decoder).__name__ == "TransformerDecoder" and model.ctc_weight == 0.3
    assert hasattr(model, "transfer") == (system == "hybrid_gmot")


# ----------------------------------------------- 2. setup + run routing ----


def test_setup_links_and_run_routes_through_launch(standin):
    espnet, asr1, recipe = standin
    opts = setup_and_run(recipe, "--stage", "10")

    template = espnet.resolve() / "egs2" / "TEMPLATE" / "asr1"
    for name in ("asr.sh", "db.sh", "pyscripts", "scripts", "utils", "steps"):
        assert (recipe / name).is_symlink() and (recipe / name).resolve() == template / name
    assert (recipe / "data").resolve() == asr1.resolve() / "data"
    assert (recipe / "dump").is_dir() and not (recipe / "dump").is_symlink()
    assert (recipe / "dump" / "raw").resolve() == asr1.resolve() / "dump" / "raw"
    assert (recipe / "data/zh_token_list/char/tokens.txt").is_file()
    # path.sh and cmd.sh stay the recipe's own files
    assert not (recipe / "path.sh").is_symlink() and not (recipe / "cmd.sh").is_symlink()

    assert opts["python"] == f"python3 -m espnet_gmot.launch {GREEDY}"  # the default interpreter
    assert opts["batch_size"] == "8"  # greedy batches decode each utterance as alone
    assert opts["stage"] == "10" and opts["stop_stage"] == "13"
    assert opts["asr_config"] == "conf/train_asr_gmot.yaml"
    assert opts["asr_tag"] == "train_asr_gmot_raw_zh_char_sp"
    assert opts["inference_config"] == "conf/decode_asr_ctc_greedy.yaml"
    assert opts["inference_asr_model"] == "valid.cer_ctc.ave.pth"
    assert (opts["lang"], opts["token_type"], opts["feats_type"]) == ("zh", "char", "raw")
    assert opts["use_lm"] == "false"
    assert (opts["train_set"], opts["valid_set"], opts["test_sets"]) == ("train", "dev", "dev test")
    assert opts["speed_perturb_factors"] == "0.9 1.0 1.1"  # asr.sh then uses train_sp
    assert opts["audio_format"] == "flac"  # detected from asr1's dump
    assert "asr_args" not in opts and "skip_data_prep" not in opts

    env = dict(line.split("=", 1) for line in (recipe / "asr_sh_env.txt").read_text().splitlines())
    assert Path(env["MAIN_ROOT"]).resolve() == espnet.resolve()
    assert env["train_cmd"] == "run.pl"


@pytest.mark.parametrize("how", ["env", "option"])
def test_recipe_outside_the_espnet_tree(tmp_path, how):
    espnet = make_espnet_root(tmp_path / "espnet")
    asr1 = make_asr1(tmp_path / "experiments" / "aishell_asr1")
    recipe = copy_recipe(tmp_path / "elsewhere" / "asr_gmot")
    if how == "env":
        setup_args, env = ["--asr1_dir", str(asr1)], {"ESPNET_ROOT": str(espnet)}
    else:
        setup_args, env = ["--espnet_root", str(espnet), "--asr1_dir", str(asr1)], {}
    opts = setup_and_run(recipe, "--stage", "10", "--python", sys.executable,
                         setup_args=setup_args, **env)
    assert opts["python"] == LAUNCH
    assert (recipe / "asr.sh").resolve() == espnet.resolve() / "egs2/TEMPLATE/asr1/asr.sh"
    assert (recipe / "dump" / "raw").resolve() == asr1.resolve() / "dump" / "raw"
    env_file = dict(line.split("=", 1) for line in (recipe / "asr_sh_env.txt").read_text().splitlines())
    assert Path(env_file["MAIN_ROOT"]).resolve() == espnet.resolve()


def test_systems_options_and_passthrough(standin):
    _, _, recipe = standin
    proc = run(["local/setup.sh"], recipe)
    assert "Next: ./run.sh --stage 10 [--system gmot|" in proc.stdout and "--method" not in proc.stdout
    for system in ("baseline", "otbert", "totcakt", "gmot"):
        proc = run(["./run.sh", "--system", system, "--python", sys.executable], recipe)
        opts = final_options(recipe)
        assert opts["asr_config"] == f"conf/train_asr_{system}.yaml"
        assert opts["asr_tag"] == f"train_asr_{system}_raw_zh_char_sp"
        assert opts["python"] == LAUNCH  # the baseline takes the same route
        assert (opts["inference_config"], opts["inference_asr_model"]) == \
            ("conf/decode_asr_ctc_greedy.yaml", "valid.cer_ctc.ave.pth")
        assert "deprecated" not in proc.stderr

    # the old option name still works, with a warning on stderr
    proc = run(["./run.sh", "--method", "otbert", "--python", sys.executable], recipe)
    assert final_options(recipe)["asr_config"] == "conf/train_asr_otbert.yaml"
    assert "--method is deprecated" in proc.stderr and "--system otbert" in proc.stderr

    # Unknown options go to asr.sh after run.sh's own; dashed names and
    # --name=value work; --asr_args merges with run.sh's additions.
    run(["./run.sh", "--stage", "11", "--stop-stage", "12", "--python", sys.executable,
         "--ngpu", "0", "--inference_nj=2", "--inference_args", "--beam_size 1",
         "--asr_args", "--max_epoch 1", "--asr-tag", "mytag", "--frontend", "fbank_pitch",
         "--test_sets", "test"], recipe)
    pairs = recorded_args(recipe)
    names = [n for n, _ in pairs]
    assert pairs[-3:] == [("--ngpu", "0"), ("--inference_nj", "2"), ("--inference_args", "--beam_size 1")]
    assert names.index("--python") < names.index("--ngpu")
    opts = final_options(recipe)
    assert (opts["stage"], opts["stop_stage"], opts["asr_tag"], opts["test_sets"]) == ("11", "12", "mytag", "test")
    assert opts["asr_args"] == "--frontend fbank_pitch --max_epoch 1"
    assert opts["asr_stats_dir"] == "exp/asr_stats_raw_fbank_pitch_zh_char_sp"
    assert opts["feats_type"] == "raw"


def test_inference_option_routes_stage_12(standin):
    _, _, recipe = standin
    run(["local/setup.sh"], recipe)
    run(["./run.sh", "--python", sys.executable, "--inference", "espnet"], recipe)
    opts = final_options(recipe)
    assert opts["python"] == f"{sys.executable} -m espnet_gmot.launch"
    assert "batch_size" not in opts  # asr.sh's default: one utterance at a time
    run(["./run.sh", "--python", sys.executable, "--inference_batch_size", "3"], recipe)
    opts = final_options(recipe)
    assert (opts["python"], opts["batch_size"]) == (LAUNCH, "3")
    proc = run(["./run.sh", "--python", sys.executable, "--inference", "beam"], recipe, check=False)
    assert proc.returncode != 0 and "--inference beam: choose ctc_greedy or espnet" in proc.stderr


@pytest.mark.parametrize("system", ["hybrid_baseline", "hybrid_gmot"])
def test_hybrid_systems_decode_with_espnets_joint_beam_search(standin, system):
    _, _, recipe = standin
    run(["local/setup.sh"], recipe)
    run(["./run.sh", "--system", system, "--python", sys.executable], recipe)
    opts = final_options(recipe)
    assert opts["asr_config"] == f"conf/train_asr_{system}.yaml"
    assert opts["python"] == f"{sys.executable} -m espnet_gmot.launch"  # ESPnet's decoder
    assert "batch_size" not in opts
    assert opts["inference_config"] == "conf/decode_asr_hybrid.yaml"
    assert opts["inference_asr_model"] == "valid.acc.ave.pth"  # best_model_criterion: valid acc
    # explicit choices still win
    run(["./run.sh", "--system", system, "--python", sys.executable, "--inference_config",
         "conf/decode_asr_ctc_greedy.yaml", "--inference_asr_model", "valid.loss.ave.pth"], recipe)
    opts = final_options(recipe)
    assert (opts["inference_config"], opts["inference_asr_model"]) == \
        ("conf/decode_asr_ctc_greedy.yaml", "valid.loss.ave.pth")


@pytest.mark.slow
def test_launch_runs_the_greedy_decoder_where_asr_sh_asks_for_asr_inference():
    proc = subprocess.run([*LAUNCH.split(), "-m", "espnet2.bin.asr_inference", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Greedy CTC decoding" in proc.stdout
    plain = subprocess.run([sys.executable, "-m", "espnet_gmot.launch", "-m",
                            "espnet2.bin.asr_inference", "--help"], capture_output=True, text=True)
    assert plain.returncode == 0 and "Greedy CTC decoding" not in plain.stdout
    assert "--time_sync" in plain.stdout  # ESPnet's own decoder


@pytest.mark.slow
def test_fbank_pitch_dump_built_from_asr1_raw_dump(standin):
    _, asr1, recipe = standin
    before = listing(asr1)
    opts = setup_and_run(recipe, "--feats_type", "fbank_pitch", "--python", sys.executable,
                         "--fbank_nj", "1")
    assert opts["feats_type"] == "fbank_pitch" and "audio_format" not in opts
    assert opts["asr_tag"] == "train_asr_gmot_fbank_pitch_zh_char_sp"
    assert opts["eval_valid_set"] == "true"  # dev is among the test sets
    fbank = recipe / "dump" / "fbank_pitch"
    assert fbank.is_dir() and not fbank.is_symlink()  # written here, not into asr1
    # Every directory asr.sh reads: train_sp and dev (stages 10-11), org/dev
    # and test (stages 12-13, dev decoded unfiltered from org/).
    for dset, utts in (("train_sp", 2), ("dev", 2), ("org/dev", 3), ("test", 2)):
        assert (fbank / dset / "feats_type").read_text().strip() == "fbank_pitch"
        assert (fbank / dset / "feats_dim").read_text().strip() == "83"
        assert len((fbank / dset / "feats.scp").read_text().splitlines()) == utts, dset
        assert (fbank / dset / "text").read_text(encoding="utf-8") == \
            (asr1 / "dump" / "raw" / dset / "text").read_text(encoding="utf-8")
    assert not (fbank / "org" / "train_sp").exists()  # asr.sh never reads it
    assert listing(asr1) == before

    # Without dev among the test sets asr.sh decodes only test: no org/ needed.
    shutil.rmtree(fbank)
    run(["./run.sh", "--feats_type", "fbank_pitch", "--python", sys.executable, "--fbank_nj", "1",
         "--test_sets", "test"], recipe)
    opts = final_options(recipe)
    assert (opts["test_sets"], opts["eval_valid_set"]) == ("test", "false")
    assert sorted(p.name for p in fbank.iterdir()) == ["dev", "test", "train_sp"]


def test_run_checks_the_directories_asr_sh_reads(standin):
    """asr.sh decodes a valid set among the test sets from org/<valid_set>."""
    _, asr1, recipe = standin
    run(["local/setup.sh"], recipe)
    (asr1 / "dump" / "raw" / "org" / "dev" / "feats_type").unlink()
    proc = run(["./run.sh", "--python", sys.executable], recipe, check=False)
    assert proc.returncode != 0
    assert "dump/raw/org/dev/feats_type not found" in proc.stderr, proc.stderr
    assert not (recipe / "asr_sh_args.txt").exists()
    for args in (["--test_sets", "test"], ["--test_sets", "test test"]):
        run(["./run.sh", "--python", sys.executable, *args], recipe)
        assert final_options(recipe)["eval_valid_set"] == "false"
    proc = run(["./run.sh", "--python", sys.executable, "--test_sets", "test",
                "--eval_valid_set", "true"], recipe, check=False)
    assert proc.returncode != 0 and "dump/raw/org/dev/feats_type not found" in proc.stderr


def test_ark_raw_dump_detected_and_fbank_dump_refused(tmp_path):
    espnet = make_espnet_root(tmp_path / "espnet")
    make_asr1(espnet / "egs2" / "aishell" / "asr1", audio="flac.ark")
    recipe = copy_recipe(espnet / "egs2" / "aishell" / "asr_gmot")
    opts = setup_and_run(recipe, "--python", sys.executable)
    assert opts["audio_format"] == "flac.ark"  # asr.sh then reads the dump as kaldi_ark
    proc = run(["./run.sh", "--feats_type", "fbank_pitch", "--python", sys.executable], recipe, check=False)
    assert proc.returncode != 0
    assert "--frontend fbank_pitch" in proc.stderr and "flac.ark" in proc.stderr
    assert not (recipe / "dump" / "fbank_pitch").exists()


def test_run_refuses_bad_options(standin):
    _, _, recipe = standin
    proc = run(["./run.sh"], recipe, check=False)
    assert proc.returncode != 0 and "local/setup.sh" in proc.stderr
    run(["local/setup.sh"], recipe)
    for args, message in [
        (["--stage", "5"], "belongs to egs2/aishell/asr1"),
        (["--skip_data_prep", "true"], "--skip_data_prep is not supported"),
        (["--system", "foo"], "choose baseline, otbert, totcakt, gmot, hybrid_baseline or hybrid_gmot"),
        (["--feats_type", "fbank"], "choose raw or fbank_pitch"),
        (["--feats_type", "fbank_pitch", "--frontend", "fbank_pitch"], "needs --feats_type raw"),
        (["--speed_perturb_factors", ""], "dump/raw/train/feats_type not found"),
        (["--python", "false"], "cannot import espnet2 and espnet_gmot"),
    ]:
        (recipe / "asr_sh_args.txt").unlink(missing_ok=True)
        proc = run(["./run.sh", *args], recipe, check=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
        assert not (recipe / "asr_sh_args.txt").exists(), args


# ---------------------------------------------------- 3. setup failures ----


def _setup_fails(recipe: Path, message: str, *args: str, **env: str) -> None:
    before = listing(recipe)
    proc = run(["local/setup.sh", *args], recipe, check=False, **env)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Nothing was changed" in proc.stderr
    assert listing(recipe) == before


def test_setup_fails_cleanly(tmp_path):
    espnet = make_espnet_root(tmp_path / "espnet")
    asr1 = make_asr1(tmp_path / "asr1")
    recipe = copy_recipe(tmp_path / "elsewhere" / "asr_gmot")
    good = ["--asr1_dir", str(asr1)]

    _setup_fails(recipe, "ESPnet checkout unknown", *good)
    _setup_fails(recipe, "is not a directory", *good, ESPNET_ROOT=str(tmp_path / "nowhere"))
    _setup_fails(recipe, "is not an ESPnet checkout", *good, ESPNET_ROOT=str(tmp_path))
    _setup_fails(recipe, "not found", "--espnet_root", str(espnet), "--asr1_dir", str(tmp_path / "none"))

    no_dump = make_asr1(tmp_path / "asr1_no_dump")
    shutil.rmtree(no_dump / "dump")
    _setup_fails(recipe, "has no usable dump", "--espnet_root", str(espnet), "--asr1_dir", str(no_dump))
    partial = make_asr1(tmp_path / "asr1_partial")
    (partial / "dump" / "raw" / "test" / "feats_type").unlink()
    _setup_fails(recipe, "dump/raw/test/feats_type", "--espnet_root", str(espnet), "--asr1_dir", str(partial))
    no_tokens = make_asr1(tmp_path / "asr1_no_tokens")
    shutil.rmtree(no_tokens / "data" / "zh_token_list")
    _setup_fails(recipe, "no character token list", "--espnet_root", str(espnet), "--asr1_dir", str(no_tokens))

    (recipe / "data").mkdir()
    _setup_fails(recipe, "is not a symbolic link", "--espnet_root", str(espnet), *good)
    (recipe / "data").rmdir()

    (espnet / "egs2/TEMPLATE/asr1/utils/parse_options.sh").unlink()
    _setup_fails(recipe, "Kaldi", "--espnet_root", str(espnet), *good)


# ------------------------------------------ 4. routed commands, for real ----


def _launch_importable() -> Optional[str]:
    proc = subprocess.run([sys.executable, "-c", "import espnet_gmot.launch"],
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


_LAUNCH_ERROR = _launch_importable()


def _tiny_asr1_and_recipe(tmp_path):
    """An ESPnet checkout whose asr1 holds a tiny corpus's dump, and the recipe beside it."""
    corpus = make_tiny_corpus(tmp_path / "corpus")
    bert = make_tiny_bert(tmp_path / "tiny_bert", hidden_size=32)
    espnet = make_espnet_root(tmp_path / "espnet")
    asr1 = espnet / "egs2" / "aishell" / "asr1"
    for dset, src in (("train_sp", "train"), ("dev", "valid"), ("org/dev", "valid"), ("test", "valid")):
        shutil.copytree(corpus[src], asr1 / "dump" / "raw" / dset)
        (asr1 / "dump" / "raw" / dset / "feats_type").write_text("raw\n")
    (asr1 / "data" / "zh_token_list" / "char").mkdir(parents=True)
    shutil.copy(corpus["token_list"], asr1 / "data" / "zh_token_list" / "char" / "tokens.txt")
    recipe = copy_recipe(espnet / "egs2" / "aishell" / "asr_gmot")
    config = tiny_recipe_config(bert)
    (recipe / "conf" / "train_asr_gmot_tiny.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return recipe


@pytest.mark.slow
@pytest.mark.skipif(_LAUNCH_ERROR is not None,
                    reason=f"espnet_gmot.launch cannot be imported: {_LAUNCH_ERROR}")
def test_float16_plm_cache_is_passed_as_npy(tmp_path):
    recipe = _tiny_asr1_and_recipe(tmp_path)
    opts = setup_and_run(recipe, "--asr_config", "conf/train_asr_gmot_tiny.yaml",
                         "--plm_cache", "true", "--plm_cache_opts", "--dtype float16",
                         "--python", sys.executable, "--ngpu", "0", "--stop_stage", "10")
    cache = "dump/plm_states/tiny_bert"
    assert opts["asr_args"] == (
        f"--train_data_path_and_name_and_type {cache}/train_sp/plm_states.scp,plm_states,npy "
        f"--valid_data_path_and_name_and_type {cache}/dev/plm_states.scp,plm_states,npy "
        "--allow_variable_data_keys true"
    )
    assert list((recipe / cache / "train_sp" / "states").glob("*.npy"))


@pytest.mark.slow
@pytest.mark.skipif(_LAUNCH_ERROR is not None,
                    reason=f"espnet_gmot.launch cannot be imported: {_LAUNCH_ERROR}")
def test_routed_gmot_commands_run_for_real(tmp_path):
    """run.sh's options (with --plm_cache) turned into asr.sh's stage 10-12 commands."""
    recipe = _tiny_asr1_and_recipe(tmp_path)
    opts = setup_and_run(recipe, "--asr_config", "conf/train_asr_gmot_tiny.yaml",
                         "--plm_cache", "true", "--python", sys.executable, "--ngpu", "0")
    cache = "dump/plm_states/tiny_bert"
    assert opts["asr_args"] == (
        f"--train_data_path_and_name_and_type {cache}/train_sp/plm_states.scp,plm_states,kaldi_ark "
        f"--valid_data_path_and_name_and_type {cache}/dev/plm_states.scp,plm_states,kaldi_ark "
        "--allow_variable_data_keys true"
    )
    for dset in ("train_sp", "dev"):
        keys = read_kaldi_map(recipe / cache / dset / "plm_states.scp")
        assert sorted(keys) == sorted(read_text(recipe / "dump/raw" / dset / "text"))

    # The commands asr.sh builds from these options (egs2/TEMPLATE/asr1/asr.sh,
    # stages 10-12), with ${python} = opts["python"]; jobs run directly instead
    # of through run.pl / espnet2.bin.launch, which need Kaldi's utils.
    python = opts["python"].split()
    assert python == LAUNCH.split()
    train_dir, valid_dir = "dump/raw/train_sp", f"dump/raw/{opts['valid_set']}"
    token_list = "data/zh_token_list/char/tokens.txt"
    stats = "exp/asr_stats_raw_zh_char_sp"
    exp = f"exp/asr_{opts['asr_tag']}"
    sound = "sound" if "ark" not in opts["audio_format"] else "kaldi_ark"
    common = ["--use_preprocessor", "true", "--bpemodel", "none", "--token_type", opts["token_type"],
              "--token_list", token_list, "--non_linguistic_symbols", "none", "--cleaner", "none",
              "--g2p", "none"]
    data = ["--train_data_path_and_name_and_type", f"{train_dir}/wav.scp,speech,{sound}",
            "--valid_data_path_and_name_and_type", f"{valid_dir}/wav.scp,speech,{sound}"]
    text = ["--train_data_path_and_name_and_type", f"{train_dir}/text,text,text",
            "--valid_data_path_and_name_and_type", f"{valid_dir}/text,text,text"]
    asr_args = opts["asr_args"].split()

    # stage 10: collect stats (one job) and aggregation
    run([*python, "-m", "espnet2.bin.asr_train", "--collect_stats", "true", *common,
         "--train_shape_file", f"{train_dir}/wav.scp", "--valid_shape_file", f"{valid_dir}/wav.scp",
         "--output_dir", f"{stats}/logdir/stats.1", "--config", opts["asr_config"],
         "--frontend_conf", "fs=16k", *data, *text, *asr_args], recipe)
    run([*python, "-m", "espnet2.bin.aggregate_stats_dirs", "--input_dir", f"{stats}/logdir/stats.1",
         "--output_dir", stats], recipe)
    n_tokens = len((recipe / token_list).read_text(encoding="utf-8").splitlines())
    for split in ("train", "valid"):
        shape = (recipe / stats / split / "text_shape").read_text().splitlines()
        (recipe / stats / split / "text_shape.char").write_text("".join(f"{s},{n_tokens}\n" for s in shape))
    assert (recipe / stats / "train" / "feats_stats.npz").is_file()

    # stage 11: training (espnet2.bin.launch adds --ngpu)
    run([*python, "-m", "espnet2.bin.asr_train", *common,
         "--valid_data_path_and_name_and_type", f"{valid_dir}/wav.scp,speech,{sound}",
         "--valid_shape_file", f"{stats}/valid/speech_shape", "--resume", "true",
         "--ignore_init_mismatch", "false", "--fold_length", "51200", "--output_dir", exp,
         "--config", opts["asr_config"], "--frontend_conf", "fs=16k",
         "--normalize=global_mvn", "--normalize_conf", f"stats_file={stats}/train/feats_stats.npz",
         "--train_data_path_and_name_and_type", f"{train_dir}/wav.scp,speech,{sound}",
         "--train_shape_file", f"{stats}/train/speech_shape", "--fold_length", "150",
         "--train_data_path_and_name_and_type", f"{train_dir}/text,text,text",
         "--train_shape_file", f"{stats}/train/text_shape.char",
         "--valid_data_path_and_name_and_type", f"{valid_dir}/text,text,text",
         "--valid_shape_file", f"{stats}/valid/text_shape.char", *asr_args, "--ngpu", "0"], recipe)
    with open(recipe / exp / "config.yaml", encoding="utf-8") as f:
        trained = yaml.safe_load(f)
    assert trained["model"] == "gmot" and trained["allow_variable_data_keys"] is True
    assert [f"{cache}/train_sp/plm_states.scp", "plm_states", "kaldi_ark"] in \
        trained["train_data_path_and_name_and_type"]
    import torch

    reported = torch.load(recipe / exp / "checkpoint.pth", map_location="cpu",
                          weights_only=False)["reporter"]["stats"][1]
    assert {"loss_ctc", "loss_align", "loss_fgw"} <= set(reported["train"])
    assert "cer_ctc" in reported["valid"]  # what best_model_criterion ranks by
    # the criterion of the recipe's config gives the model run.sh decodes with
    assert (recipe / exp / opts["inference_asr_model"]).exists()

    # stage 12: decoding with the recipe's CTC greedy config; dev is among the
    # test sets, so asr.sh decodes it from org/dev
    assert opts["eval_valid_set"] == "true"
    valid_dir = f"dump/raw/org/{opts['valid_set']}"
    out = recipe / exp / "decode_test" / "output.1"
    run([*python, "-m", "espnet2.bin.asr_inference", "--batch_size", opts["batch_size"], "--ngpu", "0",
         "--data_path_and_name_and_type", f"{valid_dir}/wav.scp,speech,{sound}",
         "--key_file", f"{valid_dir}/wav.scp", "--asr_train_config", f"{exp}/config.yaml",
         "--asr_model_file", f"{exp}/{opts['inference_asr_model']}", "--output_dir", out,
         "--config", opts["inference_config"]], recipe)
    hyps = read_text(out / "1best_recog" / "text")
    assert sorted(hyps) == sorted(read_text(recipe / valid_dir / "text"))


# ------------------------------ 5. ESPnet's real asr.sh, when available ----


def tiny_recipe_config(bert: Path) -> dict:
    """A tiny GM-OT config derived from the recipe's: same model_conf keys."""
    config = load_conf("train_asr_gmot.yaml")
    config["encoder_conf"].update(output_size=32, attention_heads=2, linear_units=64,
                                  num_blocks=2, cnn_module_kernel=3)
    config["model_conf"]["plm_conf"]["name_or_path"] = str(bert)
    config["model_conf"]["transfer_conf"]["plm_dim"] = 32
    config["model_conf"]["transfer_conf"].update(outer_iter=3, inner_iter=50)
    config.update(frontend_conf={"n_fft": 512, "hop_length": 128}, max_epoch=1,
                  batch_type="folded", batch_size=4, accum_grad=1, keep_nbest_models=1,
                  num_workers=0, use_tensorboard=False, num_att_plot=0)
    return config


@pytest.mark.slow
@needs_real_asr_sh
def test_real_asr_sh_fbank_pitch_stages_10_to_13(tmp_path):
    """run.sh --feats_type fbank_pitch through ESPnet's own asr.sh, stages 10-13.

    The asr1 experiment has asr.sh's dump layout (org/ of stage 3, the filtered
    copies of stage 4); run.sh dumps fbank+pitch without Kaldi, and asr.sh must
    train, then decode and score dev (from org/dev) and test. ``--python`` is a
    recorder, so every Python command asr.sh runs is checked to go through
    espnet_gmot.launch.
    """
    corpus = make_tiny_corpus(tmp_path / "corpus")
    bert = make_tiny_bert(tmp_path / "tiny_bert", hidden_size=32)
    asr1 = tmp_path / "asr1"
    raw = asr1 / "dump" / "raw"
    layout = {"org/train_sp": "train", "train_sp": "train", "org/dev": "valid", "dev": "valid",
              "test": "valid"}
    for dset, src in layout.items():
        shutil.copytree(corpus[src], raw / dset)
        (raw / dset / "feats_type").write_text("raw\n")
    # stage 4 dropped an utterance of dev that org/dev (what asr.sh decodes) keeps
    for name in ("wav.scp", "text", "utt2spk"):
        lines = (raw / "dev" / name).read_text(encoding="utf-8").splitlines()
        (raw / "dev" / name).write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    (raw / "dev" / "spk2utt").unlink()
    token_dir = asr1 / "data" / "zh_token_list" / "char"
    token_dir.mkdir(parents=True)
    shutil.copy(corpus["token_list"], token_dir / "tokens.txt")
    recipe = copy_recipe(tmp_path / "asr_gmot")
    (recipe / "conf" / "tiny.yaml").write_text(
        yaml.safe_dump(tiny_recipe_config(bert), allow_unicode=True))
    recorder = tmp_path / "python_recorder"
    calls = tmp_path / "python_calls.txt"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    recorder.chmod(0o755)

    run(["local/setup.sh", "--espnet_root", REAL_ESPNET_ROOT, "--asr1_dir", asr1], recipe)
    proc = run(["./run.sh", "--feats_type", "fbank_pitch", "--asr_config", "conf/tiny.yaml",
                "--python", recorder, "--fbank_nj", "1", "--ngpu", "0", "--nj", "2",
                "--inference_nj", "2"], recipe, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}"

    fbank = recipe / "dump" / "fbank_pitch"
    for dset in ("train_sp", "dev", "org/dev", "test"):
        assert (fbank / dset / "feats_type").read_text().strip() == "fbank_pitch", dset
    exp = recipe / "exp" / "asr_tiny_fbank_pitch_zh_char_sp"
    tag = "decode_asr_ctc_greedy_asr_model_valid.cer_ctc.ave"
    for dset, utts in (("org/dev", 4), ("test", 4)):
        hyps = (exp / tag / dset / "text").read_text(encoding="utf-8").splitlines()
        assert len(hyps) == utts, dset
        assert (exp / tag / dset / "score_cer" / "result.txt").is_file(), dset
    assert (exp / "RESULTS.md").is_file()
    # run.sh's own pre-step runs the dump module directly; all of asr.sh's go through launch
    commands = [c for c in calls.read_text().splitlines()
                if not c.startswith("-m espnet_gmot.bin.dump_fbank_pitch ")]
    assert any("espnet2.bin.asr_train" in c for c in commands)
    assert any("espnet2.bin.asr_inference" in c for c in commands)
    assert all(c.startswith("-m espnet_gmot.launch ") for c in commands), commands
