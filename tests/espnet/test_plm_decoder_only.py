"""Decoder-only (causal LM) teachers: reading, options, errors, cache, transfer, model.

Tiny random Qwen2 and Llama models are built here and loaded through
``from_pretrained`` (tests/helpers/tiny_causal_lm.py).
"""

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from espnet_gmot.espnet.plm_cache import PLMCacheError, write_plm_cache
from espnet_gmot.kaldi_data import write_kaldi_map
from espnet_gmot.transfer import OTKnowledgeTransfer, PLMTeacher
from tests.helpers.tiny_asr import build_tiny_gmot, make_tiny_bert, make_tiny_corpus
from tests.helpers.tiny_causal_lm import make_tiny_causal_lm

CPU = torch.device("cpu")
PREFIX = "model_conf.plm_conf."
TEXTS = ["HE HOPED THERE WOULD BE STEW", "THE CAT SAT", "IT WAS COLD IN THE MORNING"]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    # saved with left padding, as generation checkpoints often are
    return {arch: make_tiny_causal_lm(root / arch, arch, padding_side="left")
            for arch in ("qwen2", "llama")}


def teacher(path, **settings):
    return PLMTeacher(str(path), local_files_only=True, architecture="decoder_only",
                      key_prefix=PREFIX, setting=PREFIX + "name_or_path", **settings)


def reference_states(path, text, layer=-1, bos=None):
    """Hidden states of one transcript, unpadded, straight from transformers."""
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if bos is not None:
        ids = [bos] + ids
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer][0, int(bos is not None):], len(ids) - int(bos is not None)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_states_are_the_models_own_for_each_transcript_whatever_the_batch(lms, arch):
    path = lms[arch]
    plm = teacher(path)
    states, lengths, unk = plm.encode(TEXTS, CPU)
    bos = AutoTokenizer.from_pretrained(path).bos_token_id if arch == "llama" else None
    assert plm.prepends_bos == (arch == "llama")  # as the tokenizer does by itself
    assert lengths.tolist() == plm.token_counts(TEXTS)
    assert unk.tolist() == [0, 0, 0]
    for b, text in enumerate(TEXTS):
        expected, n = reference_states(path, text, bos=bos)
        assert int(lengths[b]) == n  # the BOS state is not returned
        # right padding, whatever the tokenizer saved: the shorter transcripts'
        # states equal those they have alone
        assert torch.allclose(states[b, :n], expected, atol=1e-5)


def test_hidden_layer_reads_that_layer_and_is_checked_against_the_model(lms):
    plm = teacher(lms["qwen2"], hidden_layer=1)
    states, lengths, _ = plm.encode(TEXTS[:1], CPU)
    expected, n = reference_states(lms["qwen2"], TEXTS[0], layer=1)
    assert torch.allclose(states[0, :n], expected, atol=1e-5)
    last, _, _ = teacher(lms["qwen2"]).encode(TEXTS[:1], CPU)
    assert not torch.allclose(states, last, atol=1e-3)
    with pytest.raises(ValueError, match=rf"^{PREFIX}hidden_layer 3: .* has 2 layers, so give an index from -3 to 2"):
        teacher(lms["qwen2"], hidden_layer=3).encode(TEXTS[:1], CPU)
    with pytest.raises(ValueError, match=rf"^{PREFIX}hidden_layer 'last': give an integer"):
        teacher(lms["qwen2"], hidden_layer="last")


def test_bos_option_and_its_errors_name_the_key(lms, tmp_path):
    llama_ids = AutoTokenizer.from_pretrained(lms["llama"])
    without = teacher(lms["llama"], add_bos_token=False)
    states, lengths, _ = without.encode(TEXTS[:1], CPU)
    expected, n = reference_states(lms["llama"], TEXTS[:1][0])  # no BOS
    assert int(lengths[0]) == n and torch.allclose(states[0], expected, atol=1e-5)
    with_bos, _, _ = teacher(lms["llama"], add_bos_token=True).encode(TEXTS[:1], CPU)
    assert with_bos.shape == states.shape and not torch.allclose(with_bos, states, atol=1e-3)
    assert llama_ids.bos_token_id is not None
    with pytest.raises(ValueError, match=rf"^{PREFIX}add_bos_token is true but the tokenizer .* has no BOS token .*set {PREFIX}add_bos_token: false"):
        teacher(lms["qwen2"], add_bos_token=True).encode(TEXTS[:1], CPU)
    with pytest.raises(ValueError, match=rf"^{PREFIX}add_bos_token True is for decoder-only teachers"):
        PLMTeacher("bert-base-uncased", add_bos_token=True, key_prefix=PREFIX)


def test_architecture_must_match_the_model(lms, tmp_path):
    with pytest.raises(ValueError, match=rf"^{PREFIX}architecture is 'encoder' but .* is a decoder-only .*model_type 'llama'.*set {PREFIX}architecture: decoder_only"):
        PLMTeacher(str(lms["llama"]), key_prefix=PREFIX).encode(TEXTS[:1], CPU)
    bert = make_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match=rf"is an encoder \(model_type 'bert'\): set {PREFIX}architecture: encoder"):
        teacher(bert).encode(["他"], CPU)
    with pytest.raises(ValueError, match=rf"^{PREFIX}architecture 'gpt': choose one of"):
        PLMTeacher("x", architecture="gpt", key_prefix=PREFIX)


def test_text_case_is_applied_before_tokenising(lms):
    lower = teacher(lms["qwen2"], text_case="lower")
    sentence = teacher(lms["qwen2"], text_case="sentence")
    keep = teacher(lms["qwen2"])
    assert lower.token_counts(["THE CAT SAT"]) == keep.token_counts(["the cat sat"])
    assert sentence.token_counts(["THE CAT SAT"]) == keep.token_counts(["The cat sat"])
    states, _, _ = lower.encode(["THE CAT SAT"], CPU)
    expected, _, _ = keep.encode(["the cat sat"], CPU)
    assert torch.equal(states, expected)


def test_empty_transcript_names_the_utterance(lms):
    with pytest.raises(ValueError, match=r"^Utterance u2: its transcript is empty"):
        teacher(lms["qwen2"]).encode(["THE CAT", ""], CPU, utt_ids=["u1", "u2"])


def test_fingerprint_covers_the_reading(lms, tmp_path):
    default = teacher(lms["qwen2"]).fingerprint()
    assert teacher(lms["qwen2"], hidden_layer=2).fingerprint() == default  # -1 is layer 2
    for other in (dict(hidden_layer=1), dict(text_case="lower")):
        assert teacher(lms["qwen2"], **other).fingerprint() != default, other
    llama = teacher(lms["llama"]).fingerprint()
    assert teacher(lms["llama"], add_bos_token=False).fingerprint() != llama
    # BERT's last layer keeps the fingerprint that caches made before the
    # reading options have: weights, config and vocabulary only
    bert = PLMTeacher(str(make_tiny_bert(tmp_path / "bert")))
    assert bert.reads_last_encoder_layer()
    assert PLMTeacher(str(tmp_path / "bert"), hidden_layer=1).fingerprint() != bert.fingerprint()


def test_cache_records_the_reading_and_refuses_another(lms, tmp_path):
    text = tmp_path / "text"
    write_kaldi_map(text, [(f"u{k}", t) for k, t in enumerate(TEXTS)])
    plm = teacher(lms["llama"], hidden_layer=1)
    scp = write_plm_cache(text, tmp_path / "cache", plm)
    manifest = json.loads((tmp_path / "cache" / "plm_cache.json").read_text())
    assert manifest["plm_reading"] == dict(
        architecture="decoder_only", hidden_layer=1, bos=True, text_case="keep", dtype="float32")
    import kaldiio

    cached = dict(kaldiio.load_scp(str(scp)))
    states, lengths, _ = plm.encode(TEXTS[1:2], CPU)
    assert cached["u1"].shape == (int(lengths[0]), 32)
    assert torch.allclose(torch.tensor(cached["u1"]), states[0], atol=1e-6)
    with pytest.raises(PLMCacheError) as err:
        write_plm_cache(text, tmp_path / "cache", teacher(lms["llama"]))
    message = str(err.value)
    assert "plm_reading" in message
    assert "--architecture decoder_only --hidden_layer 1 --text_case keep --add_bos_token true" in message


def test_a_cache_that_records_no_teacher_dtype_is_refused_without_a_resume_command(lms, tmp_path):
    """A decoder-only cache written before plm_conf.dtype existed records a
    reading without a dtype: no setting reproduces its fingerprint, so the
    refusal offers no command that would be refused again."""
    text = tmp_path / "text"
    write_kaldi_map(text, [(f"u{k}", t) for k, t in enumerate(TEXTS)])
    cache = tmp_path / "cache"
    write_plm_cache(text, cache, teacher(lms["qwen2"]))
    manifest_path = cache / "plm_cache.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["plm_reading"]["dtype"]
    manifest["plm_fingerprint"] = "0" * 64  # an earlier fingerprint, of another reading
    manifest_path.write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    with pytest.raises(PLMCacheError) as err:
        write_plm_cache(text, cache, teacher(lms["qwen2"]))
    message = str(err.value)
    assert "records no teacher dtype" in message and "another --output_dir" in message
    assert "To resume" not in message and "dump_plm_states" not in message
    assert {p.name: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == before


def test_l_align_skips_no_state_of_a_decoder_only_teacher():
    torch.manual_seed(0)
    module = OTKnowledgeTransfer(8, plm_dim=6, gw_weight=0.0, temporal_weight=0.0).double()
    adapted = torch.randn(1, 10, 6, dtype=torch.float64)
    plm = torch.randn(1, 4, 6, dtype=torch.float64)
    la, lt = torch.tensor([10]), torch.tensor([4])
    framed = module.transfer_losses(adapted, la, plm, lt)
    unframed = module.transfer_losses(adapted, la, plm, lt, framed_by_special_tokens=False)
    plan = unframed.plan[0]
    projected = (plan.T @ adapted[0]) / plan.sum(0)[:, None]
    misfit = 1 - torch.nn.functional.cosine_similarity(projected, plm[0], dim=-1)
    assert torch.allclose(unframed.align, misfit.sum())
    assert torch.allclose(framed.align, misfit[1:-1].sum())  # [CLS], [SEP] skipped


def test_model_trains_with_a_decoder_only_teacher_and_its_cache(lms, tmp_path):
    from tests.espnet.test_model import batch

    root = tmp_path
    corpus = make_tiny_corpus(root)
    workspace = (root, corpus, lms["llama"])
    model = build_tiny_gmot(root, corpus["token_list"], lms["llama"], plm_conf={
        "architecture": "decoder_only", "hidden_layer": -2, "local_files_only": True})
    assert model.teacher.framed_by_special_tokens is False
    data = batch(workspace)
    model.eval()
    with torch.no_grad():
        loss, stats, _ = model(**data)
        assert torch.isfinite(loss) and torch.isfinite(stats["loss_align"])
        texts = model._transcripts(data["text"], data["text_lengths"])
        states, lengths, _ = model.teacher.encode(texts, CPU)
        cached, _, _ = model(**data, plm_states=states, plm_states_lengths=lengths)
        assert torch.allclose(loss, cached, atol=1e-6)
        with pytest.raises(ValueError, match=r"no special tokens, BOS dropped"):
            model(**data, plm_states=states, plm_states_lengths=lengths + 1)
    with pytest.raises(ValueError, match=r"^model_conf\.plm_conf\.text_case 'upper': choose one of"):
        build_tiny_gmot(root, corpus["token_list"], lms["llama"], plm_conf={
            "architecture": "decoder_only", "text_case": "upper"})


def test_dump_reads_the_teacher_as_the_training_config_says(lms, tmp_path, capsys):
    import yaml

    from espnet_gmot.bin import dump_plm_states

    text = tmp_path / "text"
    write_kaldi_map(text, [("u0", TEXTS[0])])
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": "gmot", "model_conf": {"plm_conf": {
        "name_or_path": str(lms["qwen2"]), "architecture": "decoder_only", "hidden_layer": 1,
        "text_case": "sentence", "dtype": "bfloat16"}}}))
    dump_plm_states.main(["--text", str(text), "--asr_config", str(config),
                          "--output_dir", str(tmp_path / "a")])
    manifest = json.loads((tmp_path / "a" / "plm_cache.json").read_text())
    assert manifest["plm"] == str(lms["qwen2"])
    assert manifest["plm_reading"] == dict(
        architecture="decoder_only", hidden_layer=1, bos=False, text_case="sentence",
        dtype="bfloat16")
    # an option on the command line wins over the config
    dump_plm_states.main(["--text", str(text), "--asr_config", str(config), "--hidden_layer", "2",
                          "--plm_dtype", "float32", "--output_dir", str(tmp_path / "b")])
    reading = json.loads((tmp_path / "b" / "plm_cache.json").read_text())["plm_reading"]
    assert reading["hidden_layer"] == 2 and reading["dtype"] == "float32"
    with pytest.raises(SystemExit, match=r"^--add_bos_token is true but the tokenizer"):
        dump_plm_states.main(["--text", str(text), "--asr_config", str(config),
                              "--add_bos_token", "true", "--output_dir", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match=r"^--architecture is 'encoder' but"):
        dump_plm_states.main(["--text", str(text), "--plm", str(lms["qwen2"]),
                              "--output_dir", str(tmp_path / "d")])
