"""The frozen PLM teacher and the transcript it reads.

The teacher is a Hugging Face encoder (default ``bert-base-chinese``; any hub
name or local directory) loaded on first use, so collecting statistics and
decoding never load it. It is deliberately *not* a ``torch.nn.Module`` attribute
of the ASR model: it never enters the state dict, the optimiser or DDP.
"""

import logging
from typing import List, Optional, Sequence, Tuple

import torch

# ESPnet token-list symbols that carry no text.
_SILENT_TOKENS = {"<blank>", "<sos/eos>", "<sos>", "<eos>", "<pad>"}
_ESPNET_UNK = "<unk>"
_ESPNET_SPACE = "<space>"
_SENTENCEPIECE_SPACE = "\u2581"  # "▁", sentencepiece's word-boundary mark


def token_ids_to_text(ids: Sequence[int], token_list: Sequence[str], unk_text: str) -> str:
    """Rebuild a transcript from ESPnet token ids.

    Works for char token lists (``<space>`` is a space) and for sentencepiece
    BPE lists (``▁`` starts a word); ``<unk>`` becomes ``unk_text`` (the PLM's
    own unknown token), so the PLM sees one unknown token, not ``<``, ``unk``, ``>``.
    """
    pieces: List[str] = []
    for token_id in ids:
        token = token_list[int(token_id)]
        if token in _SILENT_TOKENS:
            continue
        if token == _ESPNET_UNK:
            pieces.append(f" {unk_text} ")
        elif token == _ESPNET_SPACE:
            pieces.append(" ")
        else:
            pieces.append(token.replace(_SENTENCEPIECE_SPACE, " "))
    return " ".join("".join(pieces).split())


class PLMTeacher:
    """Frozen PLM returning last hidden states of ``[CLS] text [SEP]``.

    Args:
        name_or_path: Hugging Face hub name or local directory.
        local_files_only: do not try the hub (offline machines).
    """

    def __init__(self, name_or_path: str = "bert-base-chinese", local_files_only: bool = False):
        self.name_or_path = name_or_path
        self.local_files_only = local_files_only
        self._tokenizer = None
        self._model: Optional[torch.nn.Module] = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        from transformers import AutoModel, AutoTokenizer

        logging.info(f"Loading the PLM teacher {self.name_or_path!r}")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(
                self.name_or_path, local_files_only=self.local_files_only
            )
            model = AutoModel.from_pretrained(
                self.name_or_path, local_files_only=self.local_files_only
            )
        except OSError as err:
            raise OSError(
                f"Cannot load the PLM {self.name_or_path!r} (model_conf.plm_conf."
                f"name_or_path): {err}. Give a local directory saved with "
                f"save_pretrained, or precompute the states with "
                f"`python -m espnet_gmot.bin.dump_plm_states` on a machine that has it."
            ) from err
        model.eval()
        model.requires_grad_(False)
        self._model = model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        if self._model is None:
            self._load()
        return int(self._model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        if self._model is None:
            self._load()
        return int(getattr(self._model.config, "max_position_embeddings", 512))

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        device: torch.device,
        utt_ids: Optional[Sequence[str]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last hidden states of a batch of transcripts.

        Returns:
            ``(states (B, lt, dt) float32, lengths (B,), unk_count (B,))``;
            lengths count ``[CLS]`` and ``[SEP]``.

        Raises:
            ValueError: a transcript needs more tokens than the PLM has
                positions; the message names the utterance.
        """
        if self._model is None:
            self._load()
        if next(self._model.parameters()).device != device:
            self._model.to(device)
        batch = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        lengths = batch["attention_mask"].sum(1)
        too_long = (lengths > self.max_positions).nonzero().flatten().tolist()
        if too_long:
            b = too_long[0]
            name = utt_ids[b] if utt_ids is not None else f"batch item {b}"
            raise ValueError(
                f"Utterance {name}: its transcript needs {int(lengths[b])} PLM tokens "
                f"([CLS] and [SEP] included) but {self.name_or_path!r} has "
                f"{self.max_positions} positions. Remove such utterances from the "
                f"training data (e.g. filter data/<set>/text by length)."
            )
        unk_count = (batch["input_ids"] == self.tokenizer.unk_token_id).sum(1)
        batch = {key: value.to(device) for key, value in batch.items()}
        states = self._model(**batch).last_hidden_state.float()
        return states, lengths.to(device), unk_count.to(device)
