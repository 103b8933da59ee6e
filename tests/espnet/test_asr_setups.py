"""model: gmot in the ESPnet ASR setups users run, through ESPnet's real entry points.

Hybrid CTC/attention (Conformer + Transformer decoder), CTC-only E-Branchformer
and Conformer with intermediate CTC: collect stats, train 2 epochs, decode with
ESPnet's ``asr_inference`` (joint CTC/attention beam search for the hybrid),
and decode again with the PLM gone.
"""

import re

import pytest

from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import make_tiny_bert, make_tiny_corpus, write_tiny_gmot_config

pytestmark = pytest.mark.slow

# Stats every setup must report in every epoch, besides loss/loss_asr.
EXPECTED_STATS = {
    "hybrid_conformer": ("loss_att", "acc", "loss_ctc", "cer_ctc", "loss_align", "loss_fgw"),
    "ctc_e_branchformer": ("loss_ctc", "cer_ctc", "loss_align", "loss_fgw"),
    "interctc_conformer": ("loss_ctc", "loss_interctc_layer1", "cer_interctc_layer1",
                           "loss_align", "loss_fgw"),
}
# ESPnet's joint CTC/attention decoding (AISHELL-1's decode_asr_branchformer.yaml
# uses beam 10, ctc_weight 0.4), with a small beam for the tiny model.
JOINT_DECODING = "beam_size: 3\nctc_weight: 0.4\nlm_weight: 0.0\npenalty: 0.0\nmaxlenratio: 0.0\nminlenratio: 0.0\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr_setups")
    corpus = make_tiny_corpus(root)
    bert = make_tiny_bert(root / "bert")
    exp = root / "exp"
    exp.mkdir()
    # Feature statistics do not depend on the model: one stage 10 for all setups.
    stats = pipeline.collect_stats(exp, write_tiny_gmot_config(root / "stats.yaml", bert), corpus)
    return dict(root=root, corpus=corpus, bert=bert, stats=stats)


@pytest.fixture(scope="module", params=list(EXPECTED_STATS))
def trained(request, workspace):
    variant = request.param
    exp = workspace["root"] / "exp" / variant
    exp.mkdir()
    config = write_tiny_gmot_config(exp / "train.yaml", workspace["bert"], variant)
    model = pipeline.train(exp, config, workspace["corpus"], workspace["stats"])
    decode_config = None
    if variant.startswith("hybrid"):
        decode_config = exp / "decode_joint.yaml"
        decode_config.write_text(JOINT_DECODING)
    return dict(workspace, variant=variant, exp=exp, model=model, decode_config=decode_config)


def test_two_epochs_lower_the_loss(trained):
    losses = pipeline.train_losses(trained["exp"] / "train.log")
    assert len(losses) == 2, losses
    assert losses[1] < losses[0], losses


def test_espnet_and_transfer_stats_are_reported(trained):
    results = pipeline.epoch_results(trained["exp"] / "train.log")
    assert len(results) == 2
    for line in results:
        train_part, valid_part = line.split("[valid]")
        for key in ("loss", "loss_asr", "loss_align", "loss_fgw", "ot_entropy"):
            assert re.search(rf"\b{key}=", train_part), (key, line)
        for key in EXPECTED_STATS[trained["variant"]]:
            assert re.search(rf"\b{key}=", valid_part), (key, line)
    config = (trained["model"] / "config.yaml").read_text()
    assert "model: gmot" in config and "asr_weight: 0.3" in config


def test_decoding_without_the_plm_gives_the_same_hypotheses(trained):
    exp, model, corpus = trained["exp"], trained["model"], trained["corpus"]
    how = dict(decode_config=trained["decode_config"])
    with_plm = pipeline.decode(exp, model, corpus["valid"], "with_plm", **how)
    assert sorted(with_plm) == sorted(pipeline.read_text(corpus["valid"] / "text"))
    bert = trained["bert"]
    hidden = bert.with_name("bert_hidden")
    bert.rename(hidden)
    try:
        without_plm = pipeline.decode(exp, model, corpus["valid"], "without_plm", **how)
    finally:
        hidden.rename(bert)
    assert with_plm == without_plm
    log = (exp / "decode_without_plm.log").read_text()
    assert "Loading the PLM teacher" not in log
    if trained["decode_config"] is not None:
        # joint CTC/attention beam search: ESPnet's beam search logs each scorer's share
        assert re.search(r"\* 0\.6 = .* for decoder", log), log[-2000:]
        assert re.search(r"\* 0\.4 = .* for ctc", log), log[-2000:]
    print(f"{trained['variant']}: valid CER {pipeline.cer(with_plm, corpus['valid']):.3f}")
