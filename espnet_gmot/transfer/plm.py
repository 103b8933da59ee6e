"""The frozen PLM teacher: last hidden states of plain-text transcripts.

The teacher is a Hugging Face encoder (default ``bert-base-chinese``; any hub
name or local directory) loaded on first use, so collecting statistics and
decoding never load it. It is deliberately *not* a ``torch.nn.Module`` attribute
of the ASR model: it never enters the state dict, the optimiser or DDP.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch


class PLMTeacher:
    """Frozen PLM returning last hidden states of ``[CLS] text [SEP]``.

    Args:
        name_or_path: Hugging Face hub name or local directory.
        local_files_only: do not try the hub (offline machines).
        setting: how the user gives ``name_or_path`` (a config key, a
            command-line option), named in error messages.
    """

    def __init__(
        self,
        name_or_path: str = "bert-base-chinese",
        local_files_only: bool = False,
        setting: str = "name_or_path",
    ):
        self.name_or_path = name_or_path
        self.setting = setting
        self.local_files_only = local_files_only
        self._tokenizer = None
        self._model: Optional[torch.nn.Module] = None

    @property
    def loaded(self) -> bool:
        """Whether the model (not only the tokenizer) is loaded."""
        return self._model is not None

    def _check_local_directory(self) -> None:
        """Name the setting and the path when a local directory is missing or unusable.

        Hugging Face's own messages for these cases name neither, and speak of
        hub repo ids when a local path was meant.
        """
        path = Path(self.name_or_path).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                content = sorted(p.name for p in path.iterdir())
                found = (
                    "it is empty" if not content
                    else "it holds " + ", ".join(content[:6]) + (" ..." if len(content) > 6 else "")
                )
                raise OSError(
                    f"{self.setting} {self.name_or_path!r}: the directory {path.resolve()} "
                    f"holds no PLM ({found}; config.json is missing). Save the model there "
                    f"with `model.save_pretrained(dir)` and `tokenizer.save_pretrained(dir)`, "
                    f"or give a Hugging Face hub name such as bert-base-chinese."
                )
            return
        # Hub ids are ``name`` or ``org/name``; anything else is a local path.
        looks_local = (
            path.is_absolute()
            or self.name_or_path.startswith((".", "~"))
            or self.name_or_path.count("/") > 1
            or (path.parent != Path(".") and path.parent.is_dir())
        )
        if looks_local:
            raise OSError(
                f"{self.setting} {self.name_or_path!r}: no such directory "
                f"({path.absolute()}). Give the directory of a PLM saved with "
                f"save_pretrained (relative paths are read from the directory "
                f"training runs in), or a Hugging Face hub name such as bert-base-chinese."
            )

    def _from_pretrained(self, auto_class):
        self._check_local_directory()
        try:
            return auto_class.from_pretrained(
                self.name_or_path, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as err:  # ValueError: huggingface_hub's HFValidationError
            where = (
                f"the directory {Path(self.name_or_path).expanduser().resolve()}"
                if Path(self.name_or_path).expanduser().is_dir()
                else "the Hugging Face hub" + (
                    " cache (local_files_only is set)" if self.local_files_only else ""
                )
            )
            raise OSError(
                f"Cannot load the PLM {self.name_or_path!r} ({self.setting}) from {where}: "
                f"{err}. Give a local directory saved with save_pretrained, or "
                f"precompute the states with `python -m espnet_gmot.bin.dump_plm_states` "
                f"on a machine that has it."
            ) from err

    def _load(self):
        from transformers import AutoModel

        logging.info(f"Loading the PLM teacher {self.name_or_path!r}")
        model = self._from_pretrained(AutoModel)
        model.eval()
        model.requires_grad_(False)
        self._model = model

    @property
    def tokenizer(self):
        """The PLM's tokenizer; loading it does not load the model."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = self._from_pretrained(AutoTokenizer)
        return self._tokenizer

    def token_counts(self, texts: Sequence[str]) -> List[int]:
        """PLM tokens of each transcript, ``[CLS]`` and ``[SEP]`` included."""
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._load()
        return self._model

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 512))

    def fingerprint(self) -> str:
        """SHA-256 of the weights, the config and the vocabulary: what the states depend on."""
        digest = hashlib.sha256()
        # Where the model was read from and which library version saved it do not
        # change its states.
        config = {
            key: value for key, value in self.model.config.to_dict().items()
            if not key.startswith("_") and key != "transformers_version"
        }
        digest.update(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
        vocab = sorted(self.tokenizer.get_vocab().items())
        digest.update(repr((type(self.tokenizer).__name__, vocab)).encode("utf-8"))
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode("utf-8"))
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

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
        model = self.model
        if next(model.parameters()).device != device:
            model.to(device)
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
        states = model(**batch).last_hidden_state.float()
        return states, lengths.to(device), unk_count.to(device)
