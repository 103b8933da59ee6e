"""ESPnet token-list conventions: transcripts from token ids, for the PLM teacher.

The transfer layer (``espnet_gmot.transfer``) reads plain text; this module
turns ESPnet's token ids back into that text. ESPnet token lists hold
``<blank>`` (CTC), ``<sos/eos>`` (attention decoder), ``<unk>`` and, for char
lists, ``<space>``; sentencepiece lists mark word starts with ``▁``.
"""

from typing import List, Sequence

# ESPnet token-list symbols that carry no text.
SILENT_TOKENS = frozenset({"<blank>", "<sos/eos>", "<sos>", "<eos>", "<pad>"})
UNK_TOKEN = "<unk>"
SPACE_TOKEN = "<space>"
SENTENCEPIECE_SPACE = "\u2581"  # "▁", sentencepiece's word-boundary mark


def token_ids_to_text(ids: Sequence[int], token_list: Sequence[str], unk_text: str) -> str:
    """Rebuild a transcript from ESPnet token ids.

    Works for char token lists (``<space>`` is a space) and for sentencepiece
    BPE lists (``▁`` starts a word); ``<unk>`` becomes ``unk_text`` (the PLM's
    own unknown token), so the PLM sees one unknown token, not ``<``, ``unk``, ``>``.
    """
    pieces: List[str] = []
    for token_id in ids:
        token = token_list[int(token_id)]
        if token in SILENT_TOKENS:
            continue
        if token == UNK_TOKEN:
            pieces.append(f" {unk_text} ")
        elif token == SPACE_TOKEN:
            pieces.append(" ")
        else:
            pieces.append(token.replace(SENTENCEPIECE_SPACE, " "))
    return " ".join("".join(pieces).split())
