"""model: gmot built by ESPnet's ASRTask from yaml: forward, encode, inputs, ESPnet setups."""

import pytest
import torch

from espnet_gmot.espnet.tokens import token_ids_to_text
from tests.helpers.tiny_asr import SENTENCES, build_tiny_gmot, make_tiny_bert, make_tiny_corpus


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    corpus = make_tiny_corpus(root)
    bert = make_tiny_bert(root / "bert")
    return root, corpus, bert


def build(workspace, variant="ctc_conformer", **model_conf_changes):
    root, corpus, bert = workspace
    return build_tiny_gmot(root, corpus["token_list"], bert, variant, **model_conf_changes)


def batch(workspace, sentences=SENTENCES[:3], seconds=(1.0, 0.8, 0.6)):
    root, corpus, _ = workspace
    tokens = corpus["token_list"].read_text(encoding="utf-8").split("\n")
    index = {t: i for i, t in enumerate(tokens)}
    texts = [[index.get(c, index["<unk>"]) for c in s] for s in sentences]
    t_max = max(len(t) for t in texts) if texts else 0
    text = torch.full((len(texts), max(t_max, 1)), -1, dtype=torch.long)
    for b, t in enumerate(texts):
        text[b, : len(t)] = torch.tensor(t, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    samples = [int(s * 16000) for s in seconds]
    speech = torch.zeros(len(samples), max(samples))
    for b, n in enumerate(samples):
        speech[b, :n] = 0.1 * torch.randn(n, generator=gen)
    return dict(
        speech=speech, speech_lengths=torch.tensor(samples),
        text=text, text_lengths=torch.tensor([len(t) for t in texts]),
        utt_id=[f"utt{b}" for b in range(len(texts))],
    )


def test_registered_model_trains_one_step_with_its_stats(workspace):
    model = build(workspace)
    assert type(model).__name__ == "ESPnetGMOTModel"
    # the papers' CTC-only model: no decoder, ESPnet's ctc_weight 1.0, lambda 0.3
    assert (model.asr_weight, model.ctc_weight, model.decoder) == (0.3, 1.0, None)
    loss, stats, weight = model(**batch(workspace))
    assert torch.isfinite(loss) and weight == 3
    for key in ("loss", "loss_asr", "loss_ctc", "loss_align", "loss_fgw", "ot_entropy",
                "ot_monotonicity", "ot_marginal_error", "ot_iterations", "plm_unk_rate"):
        assert key in stats and torch.isfinite(stats[key]), key
    assert torch.equal(stats["loss_asr"], stats["loss_ctc"])  # CTC-only: L_asr = L_ctc
    expected = 0.3 * stats["loss_ctc"] + 0.7 * (stats["loss_align"] + stats["loss_fgw"])
    assert torch.allclose(stats["loss"], expected, atol=1e-5)
    loss.backward()
    assert model.transfer.adapter.weight.grad.abs().sum() > 0
    assert model.encoder.embed.conv[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(**batch(workspace))
    assert "cer_ctc" in stats and stats["cer_ctc"] is not None


def test_plm_is_lazy_frozen_and_never_in_the_state_dict(workspace):
    model = build(workspace)
    data = batch(workspace)
    model.collect_feats(**data)
    model.encode(data["speech"], data["speech_lengths"])
    assert not model.teacher.loaded  # collect-stats and decoding never load it
    model(**data)
    assert model.teacher.loaded
    assert not any(k.startswith("teacher") for k in model.state_dict())
    assert all(not p.requires_grad for p in model.teacher._model.parameters())
    assert not any(p is q for p in model.parameters() for q in model.teacher._model.parameters())


def test_encode_returns_the_fused_features(workspace):
    from espnet2.asr.espnet_model import ESPnetASRModel

    model = build(workspace).eval()
    data = batch(workspace)
    with torch.no_grad():
        fused, lengths = model.encode(data["speech"], data["speech_lengths"])
        acoustic, lengths2 = ESPnetASRModel.encode(model, data["speech"], data["speech_lengths"])
        expected = model.transfer.fuse(acoustic, model.transfer.adapt(acoustic))
    assert torch.equal(fused, expected) and torch.equal(lengths, lengths2)


def test_cached_plm_states_give_the_same_loss_as_the_teacher(workspace):
    model = build(workspace)
    model.eval()
    data = batch(workspace)
    with torch.no_grad():
        loss_teacher, _, _ = model(**data)
        texts = [token_ids_to_text(t[:n].tolist(), model.token_list, "[UNK]")
                 for t, n in zip(data["text"], data["text_lengths"])]
        states, lengths, _ = model.teacher.encode(texts, torch.device("cpu"))
        padded = states.clone()
        for b, n in enumerate(lengths):
            padded[b, n:] = 0.0  # ESPnet's collate pads with zeros
        loss_cache, stats, _ = model(**data, plm_states=padded, plm_states_lengths=lengths)
    assert torch.allclose(loss_teacher, loss_cache, atol=1e-6)
    assert "plm_unk_rate" not in stats


def test_bad_transfer_conf_values_name_the_yaml_key(workspace):
    with pytest.raises(ValueError, match=r"needs model_conf\.transfer_conf\.frame_relaxation"):
        build(workspace, transfer_conf={"marginals": "semi_relaxed"})
    with pytest.raises(ValueError, match=r"model_conf\.transfer_conf\.epsilon must be > 0"):
        build(workspace, transfer_conf={"epsilon": 0.0})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['key_prefix'\]"):
        build(workspace, transfer_conf={"key_prefix": "x."})


def test_unknown_model_conf_keys_are_named(workspace):
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['gw_wieght'\] in model_conf\.transfer_conf"):
        build(workspace, transfer_conf={"gw_wieght": 0.1})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['name'\] in model_conf\.plm_conf"):
        build(workspace, plm_conf={"name": "x"})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['interctc_wieght'\] in model_conf"):
        build(workspace, interctc_wieght=0.3)
    with pytest.raises(ValueError, match=r"model_conf.asr_weight must lie in \[0, 1\], got 1.5"):
        build(workspace, asr_weight=1.5)
    with pytest.raises(ValueError, match=r"model_conf.asr_weight must lie in \[0, 1\], got nan"):
        build(workspace, asr_weight=float("nan"))
    with pytest.raises(ValueError, match=r"model_conf.transfer_weight must be >= 0 and finite, got -1.0"):
        build(workspace, transfer_weight=-1.0)
    with pytest.raises(ValueError, match=r"model_conf.transfer_weight must be >= 0 and finite, got inf"):
        build(workspace, transfer_weight=float("inf"))
    with pytest.raises(ValueError, match=r"model_conf.lsm_weight must lie in \[0, 1\), got 1.0"):
        build(workspace, lsm_weight=1.0)
    with pytest.raises(ValueError, match=r"model_conf\.transfer_conf\.overrelaxation must lie in \[1, 2\)"):
        build(workspace, transfer_conf={"overrelaxation": 2.5})


def test_old_lambda_key_without_a_decoder_says_what_to_write(workspace):
    """Earlier configs set the papers' lambda as ctc_weight; it is ESPnet's key again."""
    with pytest.raises(ValueError) as err:
        build(workspace, ctc_weight=0.3)
    message = str(err.value)
    assert "model_conf.ctc_weight is 0.3 but the model has no decoder" in message
    assert "write `asr_weight: 0.3` and drop `ctc_weight`" in message
    assert "add a `decoder:`" in message
    # ESPnet's own CTC-only value stays valid, and a decoder makes 0.3 ESPnet's weight
    assert build(workspace, ctc_weight=1.0).ctc_weight == 1.0
    assert build(workspace, "hybrid_conformer").ctc_weight == 0.3
    # unset: CTC-only 1.0, and with a decoder ESPnetASRModel's own default (0.5)
    assert build(workspace, ctc_weight=None).ctc_weight == 1.0
    assert build(workspace, "hybrid_conformer", ctc_weight=None).ctc_weight == 0.5


def test_hybrid_loss_is_espnets_plus_the_transfer_losses(workspace):
    model = build(workspace, "hybrid_conformer")
    assert model.decoder is not None and (model.ctc_weight, model.asr_weight) == (0.3, 0.3)
    seen = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: seen.update(hs_pad=args[0]))
    data = batch(workspace)
    loss, stats, _ = model(**data)
    for key in ("loss_att", "acc", "loss_ctc", "loss_asr", "loss_align", "loss_fgw"):
        assert stats[key] is not None and torch.isfinite(stats[key]), key
    assert 0.0 <= stats["acc"] <= 1.0
    # ESPnet's hybrid loss, then TOT eq. 24 with L_asr in place of L_ctc
    assert torch.allclose(stats["loss_asr"], 0.3 * stats["loss_ctc"] + 0.7 * stats["loss_att"])
    expected = 0.3 * stats["loss_asr"] + 0.7 * (stats["loss_align"] + stats["loss_fgw"])
    assert torch.allclose(stats["loss"], expected, atol=1e-5)
    loss.backward()
    for name in ("decoder.decoders.0.self_attn.linear_q.weight", "transfer.adapter.weight",
                 "transfer.fusion_proj.weight", "encoder.embed.conv.0.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    # the decoder reads the fused features, what encode() gives Speech2Text
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(**data)
        fused, _ = model.encode(data["speech"], data["speech_lengths"])
    assert torch.equal(seen["hs_pad"], fused)
    for key in ("cer", "wer", "cer_ctc"):  # ESPnet reports them in validation
        assert stats[key] is not None and torch.isfinite(stats[key]), key


def test_interctc_feeds_espnet_and_the_transfer_taps_the_final_layer(workspace):
    from espnet2.asr.espnet_model import ESPnetASRModel

    model = build(workspace, "interctc_conformer").eval()
    data = batch(workspace)
    with torch.no_grad():
        (fused, intermediate), _ = model.encode(data["speech"], data["speech_lengths"])
        (final, intermediate_raw), _ = ESPnetASRModel.encode(model, data["speech"], data["speech_lengths"])
        _, stats, _ = model(**data)
    assert [layer for layer, _ in intermediate] == [1]
    assert torch.equal(intermediate[0][1], intermediate_raw[0][1])  # untouched
    assert torch.equal(fused, model.transfer.fuse(final, model.transfer.adapt(final)))
    expected_asr = 0.5 * stats["loss_ctc"] + 0.5 * stats["loss_interctc_layer1"]
    assert torch.allclose(stats["loss_asr"], expected_asr)
    assert "cer_interctc_layer1" in stats


def test_missing_plm_names_the_model_conf_key(workspace, tmp_path):
    missing = tmp_path / "nowhere"
    model = build(workspace, plm_conf={"name_or_path": str(missing)})
    with pytest.raises(OSError, match=rf"^model_conf\.plm_conf\.name_or_path '{missing}': no such directory"):
        model(**batch(workspace))
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['setting'\] in model_conf\.plm_conf"):
        build(workspace, plm_conf={"setting": "x"})


def test_plm_hidden_size_mismatch_is_named(workspace):
    model = build(workspace, transfer_conf={"plm_dim": 48})
    with pytest.raises(ValueError, match=r"set model_conf\.transfer_conf\.plm_dim to 32"):
        model(**batch(workspace))


@pytest.mark.parametrize(
    "case, sentences, seconds",
    [
        ("empty transcript", ["", "他是老师"], (0.5, 0.7)),
        ("characters the PLM maps to [UNK]", ["他是X老师", "我们Z"], (0.8, 0.5)),
        ("fewer encoder frames than tokens", ["今天天气很好我们去学校", "他是"], (0.12, 0.5)),
    ],
)
def test_awkward_inputs_train_without_nan(workspace, case, sentences, seconds):
    model = build(workspace)
    data = batch(workspace, sentences, seconds)
    loss, stats, _ = model(**data)
    assert torch.isfinite(loss), case
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if "UNK" in case:
        assert stats["plm_unk_rate"] > 0


def test_transcript_longer_than_plm_positions_names_the_utterance(workspace):
    model = build(workspace)
    long_sentence = "他" * 600
    data = batch(workspace, [SENTENCES[0], long_sentence], (0.5, 6.0))
    with pytest.raises(ValueError, match="Utterance utt1: its transcript needs 602 PLM tokens"):
        model(**data)


def cached_inputs(model, data, dtype=torch.float32):
    """The batch's PLM states as ESPnet's collate gives a plm_states key (zero-padded)."""
    texts = [token_ids_to_text(t[:n].tolist(), model.token_list, "[UNK]")
             for t, n in zip(data["text"], data["text_lengths"])]
    states, lengths, _ = model.teacher.encode(texts, torch.device("cpu"))
    for b, n in enumerate(lengths):
        states[b, n:] = 0.0
    return dict(plm_states=states.to(dtype), plm_states_lengths=lengths)


@pytest.mark.parametrize("wrong_length", [0, 5, 7])
def test_cached_states_of_another_length_name_the_utterance(workspace, monkeypatch, wrong_length):
    monkeypatch.setenv("ESPNET_GMOT_PLM_CACHES", "train: dump/plm/train/plm_states.scp")
    model = build(workspace)
    data = batch(workspace)  # utt0 is "他是老师": 6 PLM tokens
    cached = cached_inputs(model, data)
    cached["plm_states_lengths"][0] = wrong_length
    with pytest.raises(ValueError) as err:
        model(**data, **cached)
    message = str(err.value)
    assert f"Utterance utt0: its cached PLM states have {wrong_length} vectors" in message
    assert "its transcript has 6 PLM tokens" in message
    assert "dump/plm/train/plm_states.scp" in message and "dump_plm_states" in message


def test_cached_lengths_are_bounded_without_the_tokenizer(workspace, tmp_path, caplog):
    model = build(workspace)
    data = batch(workspace)
    cached = cached_inputs(model, data)
    # A machine with only the cache: the PLM (tokenizer included) is not there.
    model.teacher = type(model.teacher)(str(tmp_path / "no_plm_here"))
    loss, _, _ = model(**data, **cached)
    assert torch.isfinite(loss)
    assert "checked only for plausible lengths" in caplog.text
    for wrong_length in (0, 1, cached["plm_states"].size(1) + 1):
        broken = dict(cached, plm_states_lengths=cached["plm_states_lengths"].clone())
        broken["plm_states_lengths"][1] = wrong_length
        with pytest.raises(ValueError, match=rf"Utterance utt1: its cached PLM states have {wrong_length} vectors but at least 2"):
            model(**data, **broken)


def test_float16_cached_states_train_like_float32(workspace):
    model = build(workspace).eval()
    data = batch(workspace)
    with torch.no_grad():
        loss32, _, _ = model(**data, **cached_inputs(model, data))
        loss16, _, _ = model(**data, **cached_inputs(model, data, torch.float16))
    assert torch.isfinite(loss16) and abs(loss16 - loss32) < 1e-3 * abs(loss32)
