"""A stand-in ESPnet checkout holding both asr_gmot recipes and an English asr1,
for the tests of ``egs2/librispeech_100/asr_gmot`` (tests/recipes/test_librispeech_*.py).

The English recipe's run.sh, path.sh, cmd.sh and local/ scripts are links into
the AISHELL recipe, so both are copied, side by side as in the repository.
The asr1 "experiment" has asr.sh's dump layout and a sentencepiece BPE model
with its ESPnet token list, made the way asr.sh's stage 5 makes them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from tests.helpers.tiny_causal_lm import ENGLISH_SENTENCES
from tests.recipes.aishell_standin import GENERATED, REPO, copy_recipe, make_asr1

ENGLISH_RECIPE = REPO / "egs2" / "librispeech_100" / "asr_gmot"
# asr.sh's names of the sets after stages 3-4 of ESPnet's librispeech_100 asr1
ENGLISH_SETS = {"train_clean_100_sp": "sp", "dev": "dv", "test_clean": "tc", "test_other": "to",
                "dev_clean": "dc", "dev_other": "do"}
ENGLISH_ORG_SETS = ("train_clean_100_sp", "dev")


def copy_english_recipe(espnet: Path) -> Path:
    """Both recipes under ``<espnet>/egs2``, the English one's links intact."""
    copy_recipe(espnet / "egs2" / "aishell" / "asr_gmot")

    def ignore(directory, names):
        return [n for n in names if n in GENERATED or n == "__pycache__" or n.startswith("asr_sh_")]

    dst = espnet / "egs2" / "librispeech_100" / "asr_gmot"
    shutil.copytree(ENGLISH_RECIPE, dst, symlinks=True, ignore=ignore)
    return dst


def write_bpe_model(token_dir: Path, text: Path, vocab_size: int) -> Path:
    """``bpe.model`` and ``tokens.txt`` in ``token_dir``, as asr.sh's stage 5
    writes them: a sentencepiece unigram model of the transcripts (full
    character coverage), and ESPnet's tokenize_text vocabulary of it with
    ``<blank>`` first, ``<unk>`` second and ``<sos/eos>`` last."""
    import sentencepiece
    from espnet2.bin.tokenize_text import tokenize

    token_dir.mkdir(parents=True, exist_ok=True)
    sentences = token_dir / "train.txt"
    lines = text.read_text(encoding="utf-8").splitlines()
    sentences.write_text("".join(line.split(" ", 1)[1] + "\n" for line in lines), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.Train(
        input=str(sentences), vocab_size=vocab_size, model_type="unigram",
        model_prefix=str(token_dir / "bpe"), character_coverage=1.0,
        input_sentence_size=100000000, minloglevel=2,
    )
    tokenize(
        input=str(text), output=str(token_dir / "tokens.txt"), field="2-", delimiter=None,
        token_type="bpe", space_symbol="<space>", non_linguistic_symbols=None,
        bpemodel=str(token_dir / "bpe.model"), log_level="WARNING", write_vocabulary=True,
        vocabulary_size=0, remove_non_linguistic_symbols=False, cutoff=0,
        add_symbol=["<blank>:0", "<unk>:1", "<sos/eos>:-1"], cleaner=None, g2p=None,
        add_nonsplit_symbol=[],
    )
    return token_dir / "bpe.model"


def make_english_asr1(asr1: Path, nbpe: int = 5000, sentences: Sequence[str] = ENGLISH_SENTENCES,
                      bpe_model: bool = True) -> Path:
    """Stand-in egs2/librispeech_100/asr1 after its stage 5 (``bpe.model`` a
    placeholder: run.sh and setup.sh only check that it is there)."""
    token_dir = f"en_token_list/bpe_unigram{nbpe}"
    pieces = sorted({"\u2581" + w for s in sentences for w in s.split()})
    make_asr1(asr1, sets=ENGLISH_SETS, org_sets=ENGLISH_ORG_SETS, sentences=sentences,
              token_list=["<blank>", "<unk>", *pieces, "<sos/eos>"], token_dir=token_dir)
    if bpe_model:
        (asr1 / "data" / token_dir / "bpe.model").write_bytes(b"stand-in sentencepiece model")
    return asr1
