"""Transcripts for the PLM from ESPnet token ids (the glue's token conventions)."""

import ast
from pathlib import Path

import pytest
import torch

import espnet_gmot.transfer
from espnet_gmot.espnet.tokens import token_ids_to_text

PACKAGE = Path(espnet_gmot.transfer.__file__).parents[1]


def test_text_from_char_token_ids():
    tokens = ["<blank>", "<unk>", "他", "是", "<space>", "A", "<sos/eos>"]
    assert token_ids_to_text([2, 3, 1, 4, 5, 6], tokens, "[UNK]") == "他是 [UNK] A"


def test_text_from_sentencepiece_token_ids():
    tokens = ["<blank>", "<unk>", "\u2581he", "llo", "\u2581world", "<sos/eos>"]
    assert token_ids_to_text([2, 3, 4], tokens, "[UNK]") == "hello world"


def test_silent_tokens_carry_no_text():
    tokens = ["<blank>", "<sos/eos>", "<pad>", "他", "<space>"]
    assert token_ids_to_text([0, 3, 2, 4, 4, 3, 1], tokens, "[UNK]") == "他 他"


def imported_modules(source: Path):
    """Top-level module names a file imports."""
    modules = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("layer", ["transfer", "ot"])
def test_transfer_and_ot_layers_know_nothing_of_espnet(layer):
    sources = sorted((PACKAGE / layer).glob("*.py"))
    assert sources
    for source in sources:
        for module in imported_modules(source):
            root = module.split(".")[0]
            assert root not in ("espnet", "espnet2"), f"{source} imports {module}"
            assert not module.startswith("espnet_gmot.espnet"), f"{source} imports {module}"
        text = source.read_text(encoding="utf-8")
        for token in ("<blank>", "<sos/eos>", "<space>", "<unk>", "token_list", "model_conf", "transfer_conf"):
            assert token not in text, f"{source} mentions ESPnet's {token}"
    assert not hasattr(espnet_gmot.transfer, "token_ids_to_text")


def test_only_the_compat_module_knows_where_espnet_keeps_its_legacy_code():
    """ESPnet 202611 moved ``espnet.*`` to ``espnet2.legacy.*``: one module resolves it."""
    sources = sorted(PACKAGE.rglob("*.py"))
    compat = PACKAGE / "espnet" / "compat.py"
    assert compat in sources
    for source in sources:
        if source == compat:
            continue
        for module in imported_modules(source):
            assert module.split(".")[0] != "espnet", f"{source} imports {module}"
            assert not module.startswith("espnet2.legacy"), f"{source} imports {module}"


def test_compat_names_are_the_ones_espnet2_itself_uses():
    from espnet2.asr.encoder import conformer_encoder

    from espnet_gmot.espnet import compat

    assert compat.make_pad_mask is conformer_encoder.make_pad_mask
    assert compat.TooShortUttError is conformer_encoder.TooShortUttError
    assert compat.pad_list([torch.ones(2), torch.ones(1)], 0).tolist() == [[1, 1], [1, 0]]
