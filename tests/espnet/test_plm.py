"""The PLM teacher: loading, errors that name the setting, fingerprint.

The plm_states cache is tested in test_plm_cache.py.
"""

import pytest
import torch

from espnet_gmot.transfer import PLMTeacher
from tests.helpers.tiny_asr import make_tiny_bert

# How ESPnet users set the teacher (model: gmot passes it; the dump command passes --plm).
SETTING = "model_conf.plm_conf.name_or_path"


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def test_teacher_loads_lazily_through_from_pretrained(bert):
    teacher = PLMTeacher(str(bert), local_files_only=True)
    assert not teacher.loaded
    states, lengths, unk = teacher.encode(["他是老师", "我X"], torch.device("cpu"))
    assert teacher.loaded
    assert lengths.tolist() == [6, 4]  # [CLS] + chars + [SEP]
    assert states.shape == (2, 6, 32) and states.dtype == torch.float32
    assert unk.tolist() == [0, 1]
    from transformers import AutoModel, AutoTokenizer

    reference = AutoModel.from_pretrained(bert).eval()
    ids = AutoTokenizer.from_pretrained(bert)(["他是老师"], return_tensors="pt")
    with torch.no_grad():
        expected = reference(**ids).last_hidden_state
    assert torch.allclose(states[0], expected[0], atol=1e-6)


def test_missing_plm_directory_names_the_setting_and_path(tmp_path):
    missing = tmp_path / "nowhere"
    teacher = PLMTeacher(str(missing), local_files_only=True, setting=SETTING)
    with pytest.raises(OSError) as err:
        teacher.encode(["他"], torch.device("cpu"))
    message = str(err.value)
    assert "model_conf.plm_conf.name_or_path" in message and str(missing) in message
    assert "no such directory" in message and "repo" not in message.lower()


def test_missing_relative_plm_directory_is_not_taken_for_a_hub_name(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match=rf"'exp/bert': no such directory \({tmp_path}/exp/bert\)"):
        PLMTeacher("exp/bert").tokenizer
    # without a setting, the constructor argument is named
    with pytest.raises(OSError, match=r"^name_or_path 'exp/bert': no such directory"):
        PLMTeacher("exp/bert").tokenizer


@pytest.mark.parametrize("content", [[], ["vocab.txt"]])
def test_plm_directory_without_a_model_names_the_setting_and_path(tmp_path, content):
    directory = tmp_path / "plm"
    directory.mkdir()
    for name in content:
        (directory / name).write_text("[PAD]\n")
    teacher = PLMTeacher(str(directory), setting=SETTING)
    with pytest.raises(OSError) as err:
        teacher.encode(["他"], torch.device("cpu"))
    message = str(err.value)
    assert "model_conf.plm_conf.name_or_path" in message and str(directory) in message
    assert ("it is empty" if not content else "it holds vocab.txt") in message
    assert "save_pretrained" in message


def test_plm_directory_without_weights_names_the_setting_and_path(tmp_path, bert):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (broken / name).write_bytes((bert / name).read_bytes())
    with pytest.raises(OSError, match=rf"Cannot load the PLM '{broken}' \(model_conf.plm_conf.name_or_path\) from the directory {broken}"):
        PLMTeacher(str(broken), setting=SETTING).encode(["他"], torch.device("cpu"))


def test_tokenizer_alone_does_not_load_the_model(bert):
    teacher = PLMTeacher(str(bert))
    assert teacher.token_counts(["他是老师", "", "我X"]) == [6, 2, 4]
    assert not teacher.loaded


def test_fingerprint_identifies_the_weights(tmp_path, bert):
    fingerprint = PLMTeacher(str(bert)).fingerprint()
    same = make_tiny_bert(tmp_path / "same")
    assert PLMTeacher(str(same)).fingerprint() == fingerprint  # same weights, other path
    teacher = PLMTeacher(str(same))
    with torch.no_grad():
        teacher.model.encoder.layer[0].output.dense.bias[0] += 1e-3
    assert teacher.fingerprint() != fingerprint


def test_weight_dtype_holds_the_teacher_in_that_precision(tmp_path, bert):
    full = PLMTeacher(str(bert))
    half = PLMTeacher(str(bert), dtype="bfloat16")
    expected, lengths, _ = full.encode(["他是老师", "我们"], torch.device("cpu"))
    states, half_lengths, _ = half.encode(["他是老师", "我们"], torch.device("cpu"))
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert states.dtype == torch.float32 and torch.equal(lengths, half_lengths)
    valid = torch.arange(states.size(1))[None, :] < lengths[:, None]
    error = (states - expected)[valid].norm(dim=-1) / expected[valid].norm(dim=-1)
    assert 0 < error.max() < 0.05  # bfloat16's 8 bits of mantissa, not another model
    # the states differ, so a cache of one is not the other's
    assert half.fingerprint() != full.fingerprint() and not half.reads_last_encoder_layer()
    with pytest.raises(ValueError, match=r"^model_conf.plm_conf.dtype 'half': choose one of \('float32'"):
        PLMTeacher(str(bert), dtype="half", key_prefix="model_conf.plm_conf.")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("hidden_layer", [-1, 1])
def test_the_teacher_runs_in_its_dtype_under_the_trainings_autocast(bert, dtype, hidden_layer):
    """ESPnet's --use_amp wraps the forward pass in autocast: the teacher still
    runs in plm_conf.dtype, so its states are those of a cache made without
    autocast (the same fingerprint)."""
    teacher = PLMTeacher(str(bert), dtype=dtype, hidden_layer=hidden_layer)
    texts = ["他是老师", "我们"]
    expected, _, _ = teacher.encode(texts, torch.device("cpu"))
    for autocast_dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=autocast_dtype):
            states, _, _ = teacher.encode(texts, torch.device("cpu"))
        assert states.dtype == torch.float32
        assert torch.equal(states, expected), (autocast_dtype, (states - expected).abs().max())


def test_a_half_precision_checkpoint_loads_in_float32_by_default(tmp_path, bert):
    """transformers 5 loads a checkpoint in the dtype its config names (4.x in
    float32): the teacher's precision is the setting's, whatever the library."""
    from transformers import AutoModel, AutoTokenizer

    saved = tmp_path / "bf16"
    AutoModel.from_pretrained(bert).to(torch.bfloat16).save_pretrained(saved)
    AutoTokenizer.from_pretrained(bert).save_pretrained(saved)
    assert {p.dtype for p in PLMTeacher(str(saved)).model.parameters()} == {torch.float32}
    assert {p.dtype for p in PLMTeacher(str(saved), dtype="bfloat16").model.parameters()} == {
        torch.bfloat16
    }

