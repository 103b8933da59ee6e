"""Batched greedy CTC decoding: the search itself, and against ESPnet's decoder."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from espnet_gmot.bin.asr_inference_ctc_greedy import get_parser, greedy_ctc_search
from espnet_gmot.kaldi_data import read_text
from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import (
    make_tiny_bert,
    ctc_best_paths,
    make_tiny_corpus,
    sharpen_ctc,
    tiny_gmot_config_text,
)

CONF = Path(__file__).parent / "conf"


class FixedPosteriors(torch.nn.Module):
    """A stand-in ASR model whose CTC log posteriors are given."""

    def __init__(self, log_probs, lengths):
        super().__init__()
        self.log_probs, self.lengths = log_probs, lengths
        self.ctc = SimpleNamespace(log_softmax=lambda encoded: encoded)

    def encode(self, speech, speech_lengths):
        return self.log_probs, self.lengths


def one_hot_path(path, vocab=5, peak=0.9):
    probs = torch.full((len(path), vocab), (1 - peak) / (vocab - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = peak
    return probs.log()


def test_best_path_collapses_repeats_drops_blanks_and_ignores_padding():
    first = one_hot_path([0, 1, 1, 0, 1, 2, 2, 3, 0])  # -> 1 1 2 3
    second = one_hot_path([4, 4, 0, 4, 3, 3, 3, 3, 3])  # valid 4 frames -> 4 4
    log_probs = torch.stack([first, second])
    lengths = torch.tensor([9, 4])
    log_probs[1, 4:] = float("nan")  # padding is never read
    hyps = greedy_ctc_search(FixedPosteriors(log_probs, lengths), None, None)
    assert [ids for ids, _ in hyps] == [[1, 1, 2, 3], [4, 4]]
    assert hyps[0][1] == pytest.approx(9 * torch.tensor(0.9).log().item(), rel=1e-6)
    assert hyps[1][1] == pytest.approx(4 * torch.tensor(0.9).log().item(), rel=1e-6)


def test_beam_search_settings_are_refused_with_the_key():
    from espnet_gmot.bin.asr_inference_ctc_greedy import check_greedy_config

    base = ["--output_dir", "o", "--data_path_and_name_and_type", "a,speech,sound",
            "--asr_train_config", "c", "--asr_model_file", "m"]
    check_greedy_config(get_parser().parse_args(base))
    for option, value in (("--beam_size", "10"), ("--ctc_weight", "0.3"), ("--nbest", "2"),
                          ("--penalty", "0.5")):
        with pytest.raises(ValueError, match=option.lstrip("-")):
            check_greedy_config(get_parser().parse_args([*base, option, value]))
    with pytest.raises(ValueError, match="lm_train_config"):
        check_greedy_config(get_parser().parse_args([*base, "--lm_train_config", "lm.yaml"]))


@pytest.fixture(scope="module")
def sharpened(tmp_path_factory):
    """A model: gmot trained for one epoch by ESPnet (which then emits only
    blanks), given a random CTC output layer with large weights and a blank bias
    that makes the blank win 60% of the frames: peaked posteriors spelling
    tokens separated by blanks, as a trained CTC model's do."""
    root = tmp_path_factory.mktemp("greedy")
    corpus = make_tiny_corpus(root)
    bert = make_tiny_bert(root / "bert")
    conf = root / "tiny_gmot.yaml"
    conf.write_text(tiny_gmot_config_text(bert, max_epoch=1))
    exp = root / "exp"
    exp.mkdir()
    stats = pipeline.collect_stats(exp, conf, corpus)
    model_dir = pipeline.train(exp, conf, corpus, stats)
    sharpen_ctc(model_dir, corpus["train"] / "wav.scp")
    return dict(exp=exp, model_dir=model_dir, corpus=corpus)


def decode_greedy(sharpened, batch_size, name):
    data_dir = sharpened["corpus"]["train"]
    out = sharpened["exp"] / name
    pipeline.run("espnet_gmot.bin.asr_inference_ctc_greedy", [
        "--ngpu", "0", "--batch_size", batch_size,
        "--data_path_and_name_and_type", f"{data_dir}/wav.scp,speech,sound",
        "--key_file", data_dir / "wav.scp",
        "--asr_train_config", sharpened["model_dir"] / "config.yaml",
        "--asr_model_file", sharpened["model_dir"] / "sharpened.pth",
        "--output_dir", out,
        "--config", Path(__file__).parents[2] / "egs2/aishell/asr_gmot/conf/decode_asr_ctc_greedy.yaml",
    ], sharpened["exp"] / f"{name}.log")
    return out / "1best_recog"


def reference_hypotheses(sharpened):
    return ctc_best_paths(sharpened["model_dir"], "sharpened.pth",
                          sharpened["corpus"]["train"] / "wav.scp")


@pytest.mark.slow
def test_batches_give_espnet_best_path_in_asr_inference_layout(sharpened):
    reference = reference_hypotheses(sharpened)
    assert sum(len(text) for text, _, _ in reference.values()) >= 2 * len(reference)
    for batch_size in (1, 5):
        best = decode_greedy(sharpened, batch_size, f"greedy_{batch_size}")
        for name in ("text", "token", "token_int", "score"):
            assert set(read_text(best / name)) == set(reference), name
        texts, tokens, token_ints = read_text(best / "text"), read_text(best / "token"), read_text(best / "token_int")
        for key, (text, token, token_int) in reference.items():
            assert (texts[key], tokens[key], token_ints[key]) == (text, token, token_int), (
                batch_size, key)
        assert all(float(score) < 0.0 for score in read_text(best / "score").values())


@pytest.mark.slow
def test_layout_is_the_one_asr_inference_writes(sharpened):
    data_dir = sharpened["corpus"]["train"]
    pipeline.decode(sharpened["exp"], sharpened["model_dir"], data_dir, "espnet",
                    model_file="sharpened.pth")
    espnet_dir = sharpened["exp"] / "decode_espnet" / "1best_recog"
    best = decode_greedy(sharpened, 4, "greedy_layout")
    assert sorted(p.name for p in best.iterdir()) == sorted(p.name for p in espnet_dir.iterdir())
    for name in ("text", "token", "token_int", "score"):
        assert list(read_text(best / name)) == list(read_text(espnet_dir / name)), name  # same key order


def test_sos_eos_is_never_emitted():
    log_probs = one_hot_path([1, 4, 4, 2], vocab=5)[None]
    model = FixedPosteriors(log_probs, torch.tensor([4]))
    model.eos = 4
    assert greedy_ctc_search(model, None, None)[0][0] == [1, 2]
