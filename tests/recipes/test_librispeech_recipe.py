"""Tests of the English recipe ``egs2/librispeech_100/asr_gmot``: its configs
(ESPnet's librispeech_100 setup and its GM-OT twins, built by ESPnet's
ASRTask), and its setup and run.sh, which are the AISHELL recipe's scripts
reading this recipe's corpus.sh, against a stand-in asr.sh (english_standin.py).
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.recipes.aishell_standin import (
    RECIPE,
    build_with_asr_task,
    make_espnet_root,
    run,
    setup_and_run,
)
from tests.recipes.english_standin import ENGLISH_RECIPE, copy_english_recipe, make_english_asr1


def load_conf(name: str, recipe=ENGLISH_RECIPE) -> dict:
    with open(recipe / "conf" / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_shared_scripts_are_links_into_the_aishell_recipe():
    for name in ("run.sh", "path.sh", "cmd.sh", "local/setup.sh", "local/plm_cache.sh",
                 "local/config_value.py", "local/audio_format.sh", "conf/decode_asr_ctc_greedy.yaml"):
        path = ENGLISH_RECIPE / name
        assert path.is_symlink() and not os.path.isabs(os.readlink(path)), name
        assert path.resolve() == (RECIPE / name).resolve(), name
    for name in ("corpus.sh", "README.md"):
        assert not (ENGLISH_RECIPE / name).is_symlink()
    proc = subprocess.run(["bash", "-n", str(ENGLISH_RECIPE / "corpus.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_baseline_is_espnets_librispeech_100_config_and_the_twins_differ_in_model_only():
    """ESPnet's egs2/librispeech_100/asr1/conf/train_asr.yaml
    (tuning/train_asr_conformer_lr2e-3_warmup15k_amp_nondeterministic.yaml)."""
    base = load_conf("train_asr_baseline.yaml")
    enc, dec = base["encoder_conf"], base["decoder_conf"]
    assert (base["encoder"], base["decoder"], base["model"]) == ("conformer", "transformer", "espnet")
    assert (enc["num_blocks"], enc["output_size"], enc["attention_heads"], enc["linear_units"],
            enc["cnn_module_kernel"], enc["input_layer"], enc["macaron_style"]) == (12, 256, 4, 1024, 31, "conv2d", True)
    assert (dec["num_blocks"], dec["attention_heads"], dec["linear_units"]) == (6, 4, 2048)
    assert base["model_conf"] == {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False}
    assert (base["batch_type"], base["batch_bins"], base["accum_grad"], base["max_epoch"], base["use_amp"]) == (
        "numel", 16000000, 4, 70, True)
    assert (base["optim_conf"], base["scheduler_conf"]) == ({"lr": 0.002, "weight_decay": 1e-6}, {"warmup_steps": 15000})
    assert base["best_model_criterion"] == [["valid", "acc", "max"]] and base["keep_nbest_models"] == 10
    assert base["specaug_conf"]["time_mask_width_ratio_range"] == [0.0, 0.05]
    assert base["frontend_conf"] == {"n_fft": 512, "win_length": 400, "hop_length": 160}

    # the transfer settings of the AISHELL recipe's GM-OT, with an English teacher
    aishell = load_conf("train_asr_gmot.yaml", RECIPE)["model_conf"]
    teachers = {
        "train_asr_gmot.yaml": ({"name_or_path": "bert-base-uncased"}, 768),
        "train_asr_gmot_qwen2.yaml": ({"name_or_path": "Qwen/Qwen2.5-0.5B", "architecture": "decoder_only",
                                       "hidden_layer": -1, "text_case": "sentence", "dtype": "float32"}, 896),
    }
    for name, (plm_conf, plm_dim) in teachers.items():
        twin = load_conf(name)
        mc = twin.pop("model_conf")
        assert twin.pop("model") == "gmot"
        assert {k: v for k, v in base.items() if k not in ("model", "model_conf")} == twin, name
        assert {k: mc.pop(k) for k in list(base["model_conf"])} == base["model_conf"], name
        assert mc.pop("plm_conf") == plm_conf
        transfer = mc.pop("transfer_conf")
        assert transfer.pop("plm_dim") == plm_dim
        assert {**mc, "transfer_conf": transfer} == {
            "asr_weight": aishell["asr_weight"], "transfer_weight": aishell["transfer_weight"],
            "transfer_conf": {k: v for k, v in aishell["transfer_conf"].items() if k != "plm_dim"}}

    assert load_conf("decode_asr_hybrid.yaml") == {  # ESPnet's beam 20, ctc 0.3, no LM
        "beam_size": 20, "ctc_weight": 0.3, "lm_weight": 0.0, "penalty": 0.0,
        "maxlenratio": 0.0, "minlenratio": 0.0}
    systems = subprocess.run(["bash", "-c", ". ./corpus.sh; echo ${corpus_systems}"], cwd=ENGLISH_RECIPE,
                             capture_output=True, text=True).stdout.split()
    assert sorted(f"train_asr_{s}.yaml" for s in systems) == sorted(
        p.name for p in (ENGLISH_RECIPE / "conf").glob("train_asr_*.yaml"))


@pytest.mark.parametrize("system", ["baseline", "gmot", "gmot_qwen2"])
def test_configs_build_with_espnets_asr_task(tmp_path, system):
    model = build_with_asr_task(
        ENGLISH_RECIPE / "conf" / f"train_asr_{system}.yaml",
        ["<blank>", "<unk>", "\u2581HE", "\u2581HOPED", "S", "<sos/eos>"], "bpe", tmp_path)
    assert type(model.encoder).__name__ == "ConformerEncoder"
    assert type(model.decoder).__name__ == "TransformerDecoder" and model.ctc_weight == 0.3
    assert hasattr(model, "transfer") == (system != "baseline")
    if system != "baseline":
        assert not model.teacher.loaded  # built without the PLM; training loads it
        assert model.teacher.framed_by_special_tokens == (system == "gmot")


@pytest.fixture
def standin(tmp_path):
    espnet = make_espnet_root(tmp_path / "espnet")
    asr1 = make_english_asr1(espnet / "egs2" / "librispeech_100" / "asr1")
    return espnet, asr1, copy_english_recipe(espnet)


def test_setup_and_run_use_the_english_corpus(standin):
    espnet, asr1, recipe = standin
    opts = setup_and_run(recipe, "--stage", "10")
    assert (recipe / "data").resolve() == asr1.resolve() / "data"
    assert (recipe / "data/en_token_list/bpe_unigram5000/bpe.model").is_file()
    assert (opts["lang"], opts["token_type"], opts["nbpe"], opts["feats_type"]) == ("en", "bpe", "5000", "raw")
    assert opts["asr_config"] == "conf/train_asr_gmot.yaml"
    assert opts["asr_tag"] == "train_asr_gmot_raw_en_bpe5000_sp"
    # hybrid CTC/attention: ESPnet's joint beam search, models ranked by accuracy
    assert opts["python"] == "python3 -m espnet_gmot.launch"
    assert opts["inference_config"] == "conf/decode_asr_hybrid.yaml"
    assert opts["inference_asr_model"] == "valid.acc.ave.pth"
    assert (opts["train_set"], opts["valid_set"], opts["test_sets"]) == (
        "train_clean_100", "dev", "test_clean test_other dev_clean dev_other")
    assert "asr_speech_fold_length" not in opts  # AISHELL asr1's, not librispeech_100's

    opts = setup_and_run(recipe, "--system", "baseline")
    assert opts["asr_tag"] == "train_asr_baseline_raw_en_bpe5000_sp"
    proc = run(["./run.sh", "--system", "hybrid_gmot"], recipe, check=False)
    assert proc.returncode != 0 and "choose baseline, gmot or gmot_qwen2" in proc.stderr
    proc = run(["./run.sh", "--stage", "1"], recipe, check=False)
    assert proc.returncode != 0 and "belongs to egs2/librispeech_100/asr1" in proc.stderr


def test_setup_refuses_an_asr1_without_its_bpe_model(tmp_path):
    espnet = make_espnet_root(tmp_path / "espnet")
    make_english_asr1(espnet / "egs2" / "librispeech_100" / "asr1", bpe_model=False)
    recipe = copy_english_recipe(espnet)
    proc = run(["local/setup.sh"], recipe, check=False)
    assert proc.returncode != 0 and "Nothing was changed" in proc.stderr
    assert ("data/en_token_list/bpe_unigram5000/bpe.model not found or empty: asr1 has no bpe5000 model "
            "(run its asr.sh up to stage 5 with --lang en --token_type bpe --nbpe 5000)") in proc.stderr
    assert not (recipe / "asr.sh").exists()
