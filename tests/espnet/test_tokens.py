"""Transcripts for the PLM from ESPnet token ids (the glue's token conventions)."""

import espnet_gmot.transfer
from espnet_gmot.espnet.tokens import token_ids_to_text


def test_text_from_char_token_ids():
    tokens = ["<blank>", "<unk>", "他", "是", "<space>", "A", "<sos/eos>"]
    assert token_ids_to_text([2, 3, 1, 4, 5, 6], tokens, "[UNK]") == "他是 [UNK] A"


def test_text_from_sentencepiece_token_ids():
    tokens = ["<blank>", "<unk>", "\u2581he", "llo", "\u2581world", "<sos/eos>"]
    assert token_ids_to_text([2, 3, 4], tokens, "[UNK]") == "hello world"


def test_silent_tokens_carry_no_text():
    tokens = ["<blank>", "<sos/eos>", "<pad>", "他", "<space>"]
    assert token_ids_to_text([0, 3, 2, 4, 4, 3, 1], tokens, "[UNK]") == "他 他"


def test_transfer_layer_has_no_espnet_token_conventions():
    assert not hasattr(espnet_gmot.transfer, "token_ids_to_text")
    source = open(espnet_gmot.transfer.plm.__file__, encoding="utf-8").read()
    assert "<space>" not in source and "<blank>" not in source
