"""ESPnet-EZ (``espnetez``) trains and decodes ``model: gmot`` once ``espnet_gmot``
is imported (README, "Sharing a model")."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import make_tiny_bert, make_tiny_corpus, write_tiny_gmot_config

pytestmark = pytest.mark.slow

# The README's example, on the tiny corpus, then ESPnet's Speech2Text in the same process.
EZ_TRAIN_AND_DECODE = """
import json, sys
import soundfile, torch
import espnet_gmot
import espnetez as ez
from espnet2.bin.asr_inference import Speech2Text
from espnet_gmot.kaldi_data import read_kaldi_map

conf, token_list, train, valid, out = sys.argv[1:]
config = ez.from_yaml("asr", conf)
config.update(token_list=token_list, token_type="char", ngpu=0, fold_length=[80000, 150])
trainer = ez.Trainer(task="asr", train_config=config, output_dir=out + "/exp",
                     stats_dir=out + "/stats", train_dump_dir=train, valid_dump_dir=valid,
                     data_info={"speech": ["wav.scp", "sound"], "text": ["text", "text"]})
trainer.collect_stats()
trainer.train()
speech2text = Speech2Text(out + "/exp/config.yaml", out + "/exp/valid.loss.best.pth",
                          device="cpu", beam_size=1, ctc_weight=1.0, lm_weight=0.0)
hyps = {}
for utt, path in read_kaldi_map(valid + "/wav.scp").items():
    wave, _ = soundfile.read(path, dtype="float32")
    hyps[utt] = speech2text(torch.from_numpy(wave))[0][0].replace(" ", "")
print(json.dumps(hyps))
"""


def test_espnetez_trains_and_decodes_gmot(tmp_path):
    corpus = make_tiny_corpus(tmp_path)
    conf = write_tiny_gmot_config(tmp_path / "gmot.yaml", make_tiny_bert(tmp_path / "bert"))
    done = subprocess.run(
        [sys.executable, "-c", EZ_TRAIN_AND_DECODE, str(conf), str(corpus["token_list"]),
         str(corpus["train"]), str(corpus["valid"]), str(tmp_path)],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-4000:]
    exp = tmp_path / "exp"
    results = [line for line in done.stderr.splitlines() if "epoch results" in line]
    assert len(results) == 2 and all("loss_align=" in line for line in results), results
    assert yaml.safe_load((exp / "config.yaml").read_text())["model"] == "gmot"
    ez_hyps = json.loads(done.stdout.splitlines()[-1])
    # an ordinary ESPnet experiment: asr.sh's decoding route gives the same hypotheses
    assert ez_hyps == pipeline.decode(tmp_path, exp, corpus["valid"], "valid")
