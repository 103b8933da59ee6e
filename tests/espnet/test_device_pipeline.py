"""A tiny ``model: gmot`` trained by ESPnet's own trainer, then decoded by
ESPnet's decoder and by the greedy decoder, on the device that
``ESPNET_GMOT_TEST_DEVICE`` names: ``cpu`` by default (this suite), ``cuda``
in tools/gpu_check.sh, which then trains with ``--ngpu 1 --use_amp true``.

The greedy decoder must give ESPnet's CTC best path (its model loading, encoder
and ``CTC.argmax`` on the device) exactly. ESPnet's beam search with beam 1 is a
prefix search, which can keep a hypothesis other than the best path (README,
"Decoding"); its differences are counted and printed, for the GPU report."""

import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import (
    ctc_best_paths,
    make_tiny_bert,
    make_tiny_corpus,
    sharpen_ctc,
    tiny_gmot_config_text,
)

DEVICE = os.environ.get("ESPNET_GMOT_TEST_DEVICE", "cpu")
GREEDY_CONFIG = Path(__file__).parents[2] / "egs2/aishell/asr_gmot/conf/decode_asr_ctc_greedy.yaml"


@pytest.mark.slow
def test_training_and_both_decoders_on_the_device(tmp_path):
    assert DEVICE in ("cpu", "cuda"), f"ESPNET_GMOT_TEST_DEVICE={DEVICE!r}: cpu or cuda"
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("ESPNET_GMOT_TEST_DEVICE=cuda, but torch sees no CUDA device")
    ngpu, amp = (1, "true") if DEVICE == "cuda" else (0, "false")
    corpus = make_tiny_corpus(tmp_path)
    conf = tmp_path / "tiny_gmot.yaml"
    conf.write_text(tiny_gmot_config_text(make_tiny_bert(tmp_path / "bert"), max_epoch=2))
    exp = tmp_path / "exp"
    exp.mkdir()
    stats = pipeline.collect_stats(exp, conf, corpus)
    model_dir = pipeline.train(exp, conf, corpus, stats,
                               extra_args=["--ngpu", str(ngpu), "--use_amp", amp])
    trained = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    assert (trained["ngpu"], trained["use_amp"]) == (ngpu, amp == "true")
    losses = pipeline.train_losses(exp / "train.log")
    assert losses and all(math.isfinite(loss) for loss in losses), losses

    data_dir = corpus["train"]
    model_file = sharpen_ctc(model_dir, data_dir / "wav.scp").name
    espnet = pipeline.decode(exp, model_dir, data_dir, "espnet", model_file=model_file, ngpu=ngpu)
    pipeline.run("espnet_gmot.bin.asr_inference_ctc_greedy", [
        "--ngpu", ngpu, "--batch_size", 4,
        "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
        "--key_file", data_dir / "wav.scp", "--asr_train_config", model_dir / "config.yaml",
        "--asr_model_file", model_dir / model_file, "--output_dir", exp / "decode_greedy",
        "--config", GREEDY_CONFIG,
    ], exp / "decode_greedy.log")
    greedy = pipeline.read_text(exp / "decode_greedy" / "1best_recog" / "text")
    best_paths = ctc_best_paths(model_dir, model_file, data_dir / "wav.scp", DEVICE)
    assert sorted(espnet) == sorted(greedy) == sorted(best_paths) == sorted(
        pipeline.read_text(data_dir / "text"))
    assert greedy == {utt: text for utt, (text, _, _) in best_paths.items()}
    assert sum(bool(text) for text in greedy.values()) >= len(greedy) // 2  # not all blank
    differing = sorted(utt for utt in greedy if greedy[utt] != espnet[utt])
    print(f"{DEVICE}: greedy = ESPnet's CTC best path on {len(greedy)} of {len(greedy)} "
          f"utterances; ESPnet's beam-1 search differs on {len(differing)} ({differing})")
