"""ESPnet's real entry points on generated data: stats, training, decoding, CER.

Every step runs as ``python -m espnet_gmot.launch -m espnet2.bin.<x>``, the
routing asr.sh gets from ``--python "python3 -m espnet_gmot.launch"``.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile
import torch

from espnet_gmot.kaldi_data import read_kaldi_map
from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import make_tiny_bert, make_tiny_corpus, tiny_gmot_config_text

pytestmark = pytest.mark.slow

CONF = Path(__file__).parent / "conf"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    corpus = make_tiny_corpus(root)
    bert = make_tiny_bert(root / "bert")
    gmot_conf = root / "tiny_gmot.yaml"
    gmot_conf.write_text(tiny_gmot_config_text(bert))
    exp = root / "exp"
    exp.mkdir()
    stats = pipeline.collect_stats(exp, gmot_conf, corpus)
    base_exp, gmot_exp = exp / "baseline", exp / "gmot"
    base_exp.mkdir()
    gmot_exp.mkdir()
    baseline = pipeline.train(base_exp, CONF / "tiny_baseline.yaml", corpus, stats)
    gmot = pipeline.train(gmot_exp, gmot_conf, corpus, stats)
    return dict(root=root, corpus=corpus, bert=bert, stats=stats, conf=gmot_conf,
                baseline=(base_exp, baseline), gmot=(gmot_exp, gmot))


def test_collect_stats_ran_without_the_plm(trained):
    stats = trained["stats"]
    assert (stats / "train" / "feats_stats.npz").exists()
    assert (stats / "train" / "speech_shape").read_text().count("\n") == 16
    log = (trained["root"] / "exp" / "collect_stats.log").read_text()
    assert "Loading the PLM teacher" not in log


@pytest.mark.parametrize("system", ["baseline", "gmot"])
def test_two_epochs_of_training_lower_the_loss(trained, system):
    exp, _ = trained[system]
    losses = pipeline.train_losses(exp / "train.log")
    assert len(losses) == 2, losses
    assert losses[1] < losses[0]


def test_gmot_log_reports_the_transfer_stats(trained):
    results = pipeline.epoch_results(trained["gmot"][0] / "train.log")
    assert len(results) == 2, results  # one per epoch
    for key in ("loss_ctc", "loss_align", "loss_fgw", "cer_ctc", "ot_entropy",
                "ot_monotonicity", "ot_marginal_error"):
        assert all(f"{key}=" in line for line in results), key


def in_process_hypotheses(model_dir: Path, model_file: str, data_dir: Path):
    """ESPnet's ``Speech2Text`` in this process, with the pipeline's decoding options."""
    from espnet2.bin.asr_inference import Speech2Text

    from espnet_gmot.espnet.registry import register

    register()
    speech2text = Speech2Text(model_dir / "config.yaml", model_dir / model_file, device="cpu",
                              beam_size=1, ctc_weight=1.0, lm_weight=0.0)
    hyps = {}
    for utt, path in read_kaldi_map(data_dir / "wav.scp").items():
        wave, _ = soundfile.read(path, dtype="float32")
        text = speech2text(torch.from_numpy(wave))[0][0]
        hyps[utt] = text.replace(" ", "")
    return hyps


@pytest.mark.parametrize("system", ["baseline", "gmot"])
def test_plugin_decoding_matches_in_process_decoding(trained, system):
    """asr.sh's stage-12 route (launcher, subprocess, data loader) decodes every
    utterance as ESPnet's ``Speech2Text`` does on the same model in this process."""
    corpus = trained["corpus"]
    exp, model = trained[system]
    hyps = pipeline.decode(exp, model, corpus["valid"], "valid")
    refs = pipeline.read_text(corpus["valid"] / "text")
    assert sorted(hyps) == sorted(refs)
    assert hyps == in_process_hypotheses(model, "valid.loss.best.pth", corpus["valid"])
    print(f"{system}: valid CER after 2 tiny epochs {pipeline.cer(hyps, corpus['valid']):.3f}")


def test_plugin_inference_entry_point_builds_the_gmot_model(trained):
    """``python -m espnet_gmot.bin.asr_inference`` registers ``model: gmot`` by itself."""
    corpus = trained["corpus"]
    exp, model = trained["gmot"]
    hyps = pipeline.decode(exp, model, corpus["valid"], "bin_entry",
                           command=[sys.executable, "-m", "espnet_gmot.bin.asr_inference"])
    assert hyps == in_process_hypotheses(model, "valid.loss.best.pth", corpus["valid"])


def test_gmot_decodes_identically_without_the_plm(trained):
    exp, model = trained["gmot"]
    corpus = trained["corpus"]
    with_plm = pipeline.decode(exp, model, corpus["valid"], "with_plm")
    hidden = trained["bert"].with_name("bert_hidden")
    trained["bert"].rename(hidden)
    try:
        without_plm = pipeline.decode(exp, model, corpus["valid"], "without_plm")
    finally:
        hidden.rename(trained["bert"])
    assert with_plm == without_plm
    assert "Loading the PLM teacher" not in (exp / "decode_without_plm.log").read_text()


def test_training_from_the_plm_state_cache(trained):
    root, corpus = trained["root"], trained["corpus"]
    caches = {}
    for split in ("train", "valid"):
        out = root / "plm_cache" / split
        subprocess.run(
            [sys.executable, "-m", "espnet_gmot.bin.dump_plm_states", "--text",
             str(corpus[split] / "text"), "--plm", str(trained["bert"]), "--output_dir", str(out)],
            check=True, capture_output=True,
        )
        caches[split] = f"{out}/plm_states.scp,plm_states,kaldi_ark"
    exp = root / "exp" / "gmot_cached"
    exp.mkdir()
    config = exp / "config.yaml"
    config.write_text(trained["conf"].read_text().replace("max_epoch: 2", "max_epoch: 1"))
    # The teacher must not be needed: point it nowhere.
    config.write_text(config.read_text().replace(str(trained["bert"]), str(root / "no_plm_here")))
    pipeline.train(exp, config, corpus, trained["stats"], extra_train=[caches["train"]],
                   extra_valid=[caches["valid"]], extra_args=["--allow_variable_data_keys", "true"])
    log = (exp / "train.log").read_text()
    assert "loss_align=" in log and "plm_unk_rate" not in log


def test_registration_reaches_spawned_workers(tmp_path):
    code = (
        "import multiprocessing as mp\n"
        "from tests.helpers.spawn_probe import registered_models\n"
        "ctx = mp.get_context('spawn')\n"
        "with ctx.Pool(1) as pool:\n"
        "    print(pool.apply(registered_models))\n"
    )
    done = subprocess.run([sys.executable, "-m", "espnet_gmot.launch", "-c", code],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'gmot'" in done.stdout and "'fbank_pitch'" in done.stdout


SPAWNING_SCRIPT = """
import multiprocessing as mp
import sys

from tests.helpers.spawn_probe import registered_models
import sibling_helper  # next to the script: sys.path[0] is the script's directory


def own_worker(tag):  # defined in the script: pickled as __main__.own_worker
    return tag, sibling_helper.VALUE, registered_models()


if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    with ctx.Pool(1) as pool:
        print(pool.apply(own_worker, ("from-worker",)))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_script_mode_registration_reaches_spawned_workers(tmp_path, method):
    """``python -m espnet_gmot.launch script.py``: workers re-import the script's main."""
    script = tmp_path / "scripts" / "spawning.py"
    script.parent.mkdir()
    script.write_text(SPAWNING_SCRIPT)
    (script.parent / "sibling_helper.py").write_text("VALUE = 42\n")
    repo = Path(__file__).parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "espnet_gmot.launch", str(script), method],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'from-worker', 42" in done.stdout, done.stdout
    assert "'gmot'" in done.stdout and "'fbank_pitch'" in done.stdout, done.stdout


def test_script_mode_missing_script_is_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "espnet_gmot.launch", str(tmp_path / "nope.py")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "nope.py" in done.stderr


def test_launch_without_plugin_leaves_espnet_untouched():
    code = "from espnet2.tasks.asr import model_choices; print(sorted(model_choices.classes))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "gmot" not in done.stdout


def test_train_entry_point_knows_the_plugin():
    done = subprocess.run([sys.executable, "-m", "espnet_gmot.bin.asr_train", "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"--model \{[^}]*gmot", done.stdout)
    assert re.search(r"--frontend \{[^}]*fbank_pitch", done.stdout)


# Sharing: asr.sh stage 14's pack, loaded in a fresh process (README, "Sharing a model").

DECODE_PACK = """
import json, sys
import soundfile, torch
import espnet_model_zoo.downloader as zoo
from espnet2.bin.asr_inference import Speech2Text
{plugin}

zoo.ModelDownloader.__init__.__defaults__ = (sys.argv[3],)  # not the venv's site-packages
speech2text = Speech2Text.from_pretrained(sys.argv[1], device="cpu", beam_size=1,
                                          ctc_weight=1.0, lm_weight=0.0)
hyps = {{}}
for line in open(sys.argv[2], encoding="utf-8"):  # no espnet_gmot import: it registers
    utt, path = line.split(maxsplit=1)
    wave, _ = soundfile.read(path.strip(), dtype="float32")
    hyps[utt] = speech2text(torch.from_numpy(wave))[0][0].replace(" ", "")
print(json.dumps(hyps))
"""


def decode_pack_in_fresh_process(pack: Path, wav_scp: Path, cache: Path, plugin: str):
    """Stock ``Speech2Text.from_pretrained(pack)`` in a new interpreter, after
    ``plugin`` (the import lines); ``(return code, hypotheses or None, stderr)``."""
    done = subprocess.run(
        [sys.executable, "-c", DECODE_PACK.format(plugin=plugin), str(pack), str(wav_scp),
         str(cache)], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    hyps = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else None
    return done.returncode, hyps, done.stderr


@pytest.fixture(scope="module")
def packed(trained):
    """asr.sh stage 14 as it runs it (through the launcher, from the recipe
    directory, relative paths), and the experiment's own decoding."""
    root = trained["root"]
    exp, model = trained["gmot"]
    (exp / "RESULTS.md").write_text("# RESULTS\n## tiny\n|CER|\n|---|\n|0.0|\n")
    pack = exp / "gmot_valid.loss.best.zip"
    pipeline.run("espnet2.bin.pack", [
        "asr", "--asr_train_config", model.relative_to(root) / "config.yaml",
        "--asr_model_file", model.relative_to(root) / "valid.loss.best.pth",
        "--option", (trained["stats"] / "train" / "feats_stats.npz").relative_to(root),
        "--option", (exp / "RESULTS.md").relative_to(root), "--outpath", pack,
    ], exp / "pack.log", cwd=root)
    experiment_hyps = pipeline.decode(exp, model, trained["corpus"]["valid"], "before_pack")
    return dict(pack=pack, hyps=experiment_hyps, exp=exp, model=model)


@contextlib.contextmanager
def teacher_hidden(trained):
    """The teacher's directory is gone, as on a machine the pack was sent to."""
    hidden = trained["bert"].with_name("bert_hidden")
    trained["bert"].rename(hidden)
    try:
        yield
    finally:
        hidden.rename(trained["bert"])


def test_the_pack_holds_no_plm_and_no_training_machine_path(trained, packed):
    import yaml

    with zipfile.ZipFile(packed["pack"]) as pack:
        names = pack.namelist()
        meta = yaml.safe_load(pack.read("meta.yaml"))
        config_text = pack.read(meta["yaml_files"]["asr_train_config"]).decode()
        results = pack.read(next(n for n in names if n.endswith("RESULTS.md"))).decode()
    assert set(meta["files"]) == {"asr_model_file"}
    assert not [n for n in names if n.endswith((".safetensors", ".bin", "vocab.txt"))], names
    config = yaml.safe_load(config_text)
    assert config["model"] == "gmot"
    assert config["model_conf"]["plm_conf"]["name_or_path"] == "bert"  # the directory's name
    assert str(trained["bert"]) not in config_text
    # the model card (asr.sh's upload stages copy RESULTS.md into it) names the plugin
    assert "pip install espnet-gmot" in results and "import espnet_gmot" in results
    assert results.count("needs the espnet-gmot plugin") == 1
    assert "|CER|" in results


def test_the_pack_decodes_in_a_fresh_process_as_the_experiment(trained, packed, tmp_path):
    """Stock ``Speech2Text.from_pretrained(zip)``, the plugin imported after
    ESPnet, the teacher's directory gone: the experiment's own hypotheses."""
    wav_scp = trained["corpus"]["valid"] / "wav.scp"
    with teacher_hidden(trained):
        rc, hyps, err = decode_pack_in_fresh_process(packed["pack"], wav_scp, tmp_path / "cache",
                                                     plugin="import espnet_gmot")
    assert rc == 0, err[-3000:]
    assert hyps == packed["hyps"]
    assert "Loading the PLM teacher" not in err


def test_without_the_plugin_espnet_refuses_the_pack_by_the_model_name(trained, packed, tmp_path):
    """What stock ESPnet says when ``import espnet_gmot`` is missing (README,
    "Sharing a model", quotes it): it cannot be made to say more without the plugin."""
    rc, _, err = decode_pack_in_fresh_process(packed["pack"], trained["corpus"]["valid"] / "wav.scp",
                                              tmp_path / "cache", plugin="")
    assert rc != 0
    assert re.search(r"ValueError: --model must be one of .*: --model gmot", err), err[-3000:]
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "--model must be one of" in readme and "--model gmot" in readme


def test_the_greedy_decoder_takes_the_unpacked_pack(trained, packed, tmp_path):
    """``--model_tag <the zip unpacked>`` (as asr.sh's Hugging Face stage uploads
    it): the greedy decoder's hypotheses of the experiment's own files."""
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(packed["pack"]) as pack:
        pack.extractall(unpacked)
    corpus, exp = trained["corpus"], packed["exp"]
    greedy = [sys.executable, "-m", "espnet_gmot.bin.asr_inference_ctc_greedy"]
    expected = pipeline.decode(exp, packed["model"], corpus["valid"], "greedy_exp", command=greedy)
    out = tmp_path / "decode"
    with teacher_hidden(trained):
        pipeline.run("greedy", [
            "--model_tag", unpacked, "--data_path_and_name_and_type",
            f"{corpus['valid']}/wav.scp,speech,sound", "--output_dir", out,
        ], tmp_path / "decode.log", command=greedy)
    assert pipeline.read_text(out / "1best_recog" / "text") == expected
