"""The English recipe's small check: espeak-ng English speech, a tiny English
teacher trained here, the recipe's baseline and GM-OT configs at toy size.

- With ``ESPNET_GMOT_ESPNET_ROOT`` (an ESPnet checkout with Kaldi's utils/):
  the recipe's run.sh and ESPnet's real asr.sh, stages 10-13.
- Always: a stand-in that runs the Python commands of asr.sh's stages 10-12
  (espnet2.bin.asr_train, asr_inference through espnet_gmot.launch) and scores
  words as stage 13 does.

``python -m tests.recipes.test_librispeech_check --out DIR --epochs 30 --seeds 0 1 2
[--systems baseline gmot gmot_control]`` runs the stand-in longer and prints
the word error rates of the recipe's CHECK.md.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path
from typing import Dict

import editdistance
import pytest
import yaml

from espnet_gmot import kaldi_data
from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_english import make_english_corpus, train_english_teacher
from tests.recipes.aishell_standin import REAL_ESPNET_ROOT, needs_real_asr_sh, run
from tests.recipes.english_standin import ENGLISH_RECIPE, copy_english_recipe, write_bpe_model

SYSTEMS = ("baseline", "gmot")
# gmot_control: GM-OT reading the teacher's architecture and tokenizer with
# untrained weights, to tell the trained teacher's share of a gain from the rest
CONTROL = "gmot_control"
BPE_UNITS = 60


def tiny_english_config(system: str, teacher: Path, epochs: int, seed: int) -> dict:
    """The recipe's ``train_asr_<system>.yaml`` at toy size: the same model_conf keys."""
    config = yaml.safe_load((ENGLISH_RECIPE / "conf" / f"train_asr_{system}.yaml").read_text())
    config["encoder_conf"].update(output_size=64, attention_heads=2, linear_units=128,
                                  num_blocks=2, cnn_module_kernel=7)
    config["decoder_conf"].update(attention_heads=2, linear_units=128, num_blocks=1)
    if system != "baseline":
        config["model_conf"]["plm_conf"]["name_or_path"] = str(teacher)
        config["model_conf"]["transfer_conf"]["plm_dim"] = 32
    config.update(max_epoch=epochs, seed=seed, batch_type="folded", batch_size=8, accum_grad=1,
                  keep_nbest_models=1, num_workers=0, use_tensorboard=False, use_amp=False,
                  log_interval=None, optim_conf={"lr": 0.002, "weight_decay": 1e-6},
                  scheduler_conf={"warmup_steps": 100})
    return config


def word_error_rate(hyps: Dict[str, str], text: Path) -> float:
    refs = kaldi_data.read_text(text)
    errors = sum(editdistance.eval(hyps.get(u, "").split(), r.split()) for u, r in refs.items())
    return errors / sum(len(r.split()) for r in refs.values())


def english_corpus(root: Path, seed: int = 0, teacher_steps: int = 150) -> Dict[str, Path]:
    corpus = make_english_corpus(root / "corpus", seed=seed)
    bpe_dir = root / "corpus" / "en_token_list" / f"bpe_unigram{BPE_UNITS}"
    corpus["bpemodel"] = write_bpe_model(bpe_dir, corpus["train"] / "text", BPE_UNITS)
    corpus["token_list"] = bpe_dir / "tokens.txt"
    text = corpus.pop("teacher_text")
    corpus["teacher"] = train_english_teacher(root / "teacher", text, steps=teacher_steps, seed=seed)
    corpus["control_teacher"] = train_english_teacher(root / "control_teacher", text, steps=0, seed=seed)
    return corpus


def standin_check(root: Path, corpus: Dict[str, Path], epochs: int, seed: int = 0,
                  systems=SYSTEMS) -> Dict[str, dict]:
    """Stages 10-13 of each system through ESPnet's entry points: WER and logs."""
    units = ("--token_type", "bpe", "--bpemodel", corpus["bpemodel"])
    decode_config = ENGLISH_RECIPE / "conf" / "decode_asr_hybrid.yaml"
    results = {}
    for system in systems:
        exp = root / f"{system}_seed{seed}"
        exp.mkdir(parents=True)
        config = exp / "config.yaml"
        teacher = corpus["control_teacher" if system == CONTROL else "teacher"]
        recipe_system = "gmot" if system == CONTROL else system
        config.write_text(yaml.safe_dump(tiny_english_config(recipe_system, teacher, epochs, seed)))
        stats = pipeline.collect_stats(exp, config, corpus, units=units)
        model = pipeline.train(exp, config, corpus, stats, units=units)
        hyps = pipeline.decode(exp, model, corpus["test"], "test", decode_config=decode_config,
                               model_file="valid.acc.best.pth")
        hyps = kaldi_data.read_text(exp / "decode_test" / "1best_recog" / "text")
        results[system] = dict(wer=word_error_rate(hyps, corpus["test"] / "text"), hyps=hyps,
                               log=exp / "train.log")
    return results


@pytest.mark.slow  # synthesises, trains a teacher and two models: about a minute on 2 cores
def test_english_check_stand_in(tmp_path):
    corpus = english_corpus(tmp_path)
    results = standin_check(tmp_path, corpus, epochs=2)
    for system, result in results.items():
        assert sorted(result["hyps"]) == sorted(kaldi_data.read_text(corpus["test"] / "text")), system
        assert 0.0 <= result["wer"] and len(pipeline.epoch_results(result["log"])) == 2, system
    log = results["gmot"]["log"].read_text()
    assert "loss_align=" in log and "plm_unk_rate=0.000" in log  # every word known to the teacher
    assert "loss_align=" not in results["baseline"]["log"].read_text()


@pytest.mark.slow
@needs_real_asr_sh
def test_english_recipe_real_asr_sh_stages_10_to_13(tmp_path):
    """The English recipe's run.sh through ESPnet's own asr.sh on the espeak-ng corpus,
    GM-OT with the tiny teacher, every Python command routed through espnet_gmot.launch."""
    corpus = english_corpus(tmp_path)
    asr1 = tmp_path / "asr1"
    raw = asr1 / "dump" / "raw"
    for dset, src in {"org/train_sp": "train", "train_sp": "train", "org/dev": "valid",
                      "dev": "valid", "test": "test"}.items():
        shutil.copytree(corpus[src], raw / dset)
        (raw / dset / "feats_type").write_text("raw\n")
    # run.sh names asr.sh's token directory after corpus.sh's nbpe
    shutil.copytree(corpus["bpemodel"].parent, asr1 / "data" / "en_token_list" / "bpe_unigram5000")
    recipe = copy_english_recipe(tmp_path / "espnet_like")
    (recipe / "conf" / "tiny.yaml").write_text(
        yaml.safe_dump(tiny_english_config("gmot", corpus["teacher"], epochs=1, seed=0)))
    recorder = tmp_path / "python_recorder"
    calls = tmp_path / "python_calls.txt"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    recorder.chmod(0o755)

    run(["local/setup.sh", "--espnet_root", REAL_ESPNET_ROOT, "--asr1_dir", asr1,
         "--dsets", "train_sp dev test"], recipe)
    proc = run(["./run.sh", "--asr_config", "conf/tiny.yaml", "--train_set", "train",
                "--test_sets", "test", "--python", recorder, "--ngpu", "0", "--nj", "1",
                "--inference_nj", "1"], recipe, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}"
    exp = recipe / "exp" / "asr_tiny_raw_en_bpe5000_sp"
    tag = "decode_asr_hybrid_asr_model_valid.acc.ave"
    hyps = (exp / tag / "test" / "text").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(kaldi_data.read_text(corpus["test"] / "text"))
    assert (exp / tag / "test" / "score_wer" / "result.txt").is_file()
    commands = calls.read_text().splitlines()
    assert any("espnet2.bin.asr_train" in c for c in commands)
    assert all(c.startswith("-m espnet_gmot.launch ") for c in commands), commands


def main(argv=None) -> None:
    """The longer stand-in of CHECK.md: WER of each system per seed."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--teacher_steps", type=int, default=300)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=[*SYSTEMS, CONTROL])
    args = parser.parse_args(argv)
    corpus = english_corpus(args.out, teacher_steps=args.teacher_steps)
    for seed in args.seeds:
        results = standin_check(args.out, copy.copy(corpus), args.epochs, seed, args.systems)
        print(" ".join(f"{s}: WER {100 * r['wer']:.1f}%" for s, r in results.items()), f"(seed {seed})",
              flush=True)


if __name__ == "__main__":
    main()
