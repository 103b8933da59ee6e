"""The frozen PLM teacher: hidden states of plain-text transcripts.

The teacher is a Hugging Face model (any hub name or local directory) loaded on
first use, so collecting statistics and decoding never load it: an encoder
(default ``bert-base-chinese``; ``bert-base-uncased``, ``roberta-base``, ...) or
a decoder-only (causal) language model (Qwen2, Llama, ... architectures). It is
deliberately *not* a ``torch.nn.Module`` attribute of the ASR model: it never
enters the state dict, the optimiser or DDP.

Which states are transported:

- encoder: ``[CLS] y [SEP]`` (the papers' setting: the special tokens take part
  in the coupling, the alignment loss skips them);
- decoder-only: the tokens of ``y`` only. A causal model has no ``[CLS]`` or
  ``[SEP]``; its BOS state (when a BOS is prepended) attends to nothing but
  itself, so it is the same vector for every transcript and carries nothing to
  transfer: it is read but dropped.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

ARCHITECTURES = ("encoder", "decoder_only")
# How transcripts are cased before the teacher reads them. ASR corpora often
# store upper-case text (LibriSpeech); uncased teachers lower-case it
# themselves, cased ones (RoBERTa, LLMs) read upper case as rare, shouting text.
TEXT_CASES = ("keep", "lower", "sentence")
# The precisions the teacher's weights can be held in. float32 by default, not
# the checkpoint's own: transformers 5 loads a checkpoint in the dtype its config
# names (bfloat16 for Qwen2.5), 4.x in float32, so the states (and a cache's
# fingerprint) would depend on the library. Half precision halves the teacher's
# memory and, on a CPU with bfloat16 instructions, more than halves its time.
WEIGHT_DTYPES = ("float32", "bfloat16", "float16")


def normalise_case(text: str, text_case: str) -> str:
    """``text`` as the teacher reads it (:data:`TEXT_CASES`)."""
    if text_case == "lower":
        return text.lower()
    if text_case == "sentence":  # "HE HOPED" -> "He hoped"
        lowered = text.lower()
        return lowered[:1].upper() + lowered[1:]
    return text


def setting_text(key_prefix: str, key: str, value: str) -> str:
    """How to write a setting: ``--key value`` on a command line, ``section.key: value`` in yaml."""
    return f"--{key} {value}" if key_prefix == "--" else f"{key_prefix}{key}: {value}"


def _dtype_argument(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` from transformers 4.56 on
    (``torch_dtype`` is deprecated there), ``torch_dtype`` before."""
    import transformers
    from packaging.version import Version

    new = Version(transformers.__version__) >= Version("4.56")
    return {"dtype" if new else "torch_dtype": dtype}


class PLMTeacher:
    """Frozen PLM returning the hidden states of a transcript's tokens.

    Args:
        name_or_path: Hugging Face hub name or local directory.
        local_files_only: do not try the hub (offline machines).
        architecture: ``"encoder"`` (BERT-like: states of ``[CLS] text
            [SEP]``) or ``"decoder_only"`` (a causal LM: states of the text's
            tokens, no special tokens).
        hidden_layer: which hidden state to read, indexed as Hugging Face's
            ``hidden_states`` (0: the embeddings, ``k``: the output of layer
            ``k``; negative from the end, -1: the last layer, after a
            decoder's final norm).
        add_bos_token: decoder-only teachers: prepend the tokenizer's BOS token
            (its state is then dropped, see the module docstring); ``None``:
            as the tokenizer does by itself (Llama's adds one, Qwen2's has
            none). Encoders: must stay ``None`` (``[CLS]`` starts them).
        text_case: ``"keep"``, ``"lower"`` or ``"sentence"`` (first letter
            upper, the rest lower): the casing of the text the teacher reads.
        dtype: the precision the weights are held and run in
            (:data:`WEIGHT_DTYPES`), whatever autocast the caller runs under;
            the states are returned in float32 whatever it is.
        setting: how the user gives ``name_or_path`` (a config key, a
            command-line option), named in error messages.
        key_prefix: prefix of the other arguments' names in error messages
            (a config section such as ``plm_conf.``, or ``--``).
    """

    def __init__(
        self,
        name_or_path: str = "bert-base-chinese",
        local_files_only: bool = False,
        architecture: str = "encoder",
        hidden_layer: int = -1,
        add_bos_token: Optional[bool] = None,
        text_case: str = "keep",
        dtype: str = "float32",
        setting: str = "name_or_path",
        key_prefix: str = "",
    ):
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"{key_prefix}architecture {architecture!r}: choose one of {ARCHITECTURES} "
                f"(decoder_only for a causal language model such as Qwen2 or Llama)"
            )
        if isinstance(hidden_layer, bool) or not isinstance(hidden_layer, int):
            raise ValueError(
                f"{key_prefix}hidden_layer {hidden_layer!r}: give an integer layer index "
                f"(0: embeddings, k: output of layer k, -1: the last layer)"
            )
        if add_bos_token is not None and architecture == "encoder":
            raise ValueError(
                f"{key_prefix}add_bos_token {add_bos_token!r} is for decoder-only teachers; "
                f"an encoder's states start with its own [CLS]: remove the key, or set "
                f"{setting_text(key_prefix, 'architecture', 'decoder_only')}"
            )
        if text_case not in TEXT_CASES:
            raise ValueError(f"{key_prefix}text_case {text_case!r}: choose one of {TEXT_CASES}")
        if dtype not in WEIGHT_DTYPES:
            raise ValueError(
                f"{key_prefix}dtype {dtype!r}: choose one of {WEIGHT_DTYPES} (the precision "
                f"the teacher's weights are held in; bfloat16 halves their memory)"
            )
        self.name_or_path = name_or_path
        self.setting = setting
        self.key_prefix = key_prefix
        self.local_files_only = local_files_only
        self.architecture = architecture
        self.hidden_layer = hidden_layer
        self.add_bos_token = add_bos_token
        self.text_case = text_case
        self.dtype = dtype
        self._tokenizer = None
        self._model: Optional[torch.nn.Module] = None
        self._prepends_bos: Optional[bool] = None

    @property
    def framed_by_special_tokens(self) -> bool:
        """Whether the states start with ``[CLS]`` and end with ``[SEP]`` (encoders)."""
        return self.architecture == "encoder"

    @property
    def min_tokens(self) -> int:
        """The fewest states a transcript has: ``[CLS]`` and ``[SEP]``, or one token."""
        return 2 if self.framed_by_special_tokens else 1

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

    def _from_pretrained(self, auto_class, **kwargs):
        self._check_local_directory()
        try:
            return auto_class.from_pretrained(
                self.name_or_path, local_files_only=self.local_files_only, **kwargs
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
        model = self._from_pretrained(AutoModel, **_dtype_argument(getattr(torch, self.dtype)))
        self._check_architecture(model.config)
        layers = int(model.config.num_hidden_layers)
        if not -(layers + 1) <= self.hidden_layer <= layers:
            raise ValueError(
                f"{self.key_prefix}hidden_layer {self.hidden_layer}: {self.name_or_path!r} "
                f"has {layers} layers, so give an index from {-(layers + 1)} to {layers} "
                f"(0: embeddings, -1: the last layer)"
            )
        model.eval()
        model.requires_grad_(False)
        self._model = model

    def _check_architecture(self, config) -> None:
        """Refuse a causal LM read as an encoder and the other way round.

        Encoders (BERT, RoBERTa) also have a causal-LM head in transformers;
        only decoder-only models lack a masked-LM one.
        """
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )

        model_type = getattr(config, "model_type", "")
        decoder_only = (
            model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        )
        wanted = "decoder_only" if decoder_only else "encoder"
        if wanted != self.architecture:
            raise ValueError(
                f"{self.key_prefix}architecture is {self.architecture!r} but "
                f"{self.name_or_path!r} ({self.setting}) is a"
                f"{' decoder-only (causal) language model' if decoder_only else 'n encoder'} "
                f"(model_type {model_type!r}): set {setting_text(self.key_prefix, 'architecture', wanted)}"
            )

    @property
    def tokenizer(self):
        """The PLM's tokenizer; loading it does not load the model."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = self._from_pretrained(AutoTokenizer)
        return self._tokenizer

    @property
    def prepends_bos(self) -> bool:
        """Whether a decoder-only teacher's input starts with the BOS token."""
        if self._prepends_bos is None:
            bos_id = self.tokenizer.bos_token_id
            if self.add_bos_token is None:
                # As the tokenizer does by itself with its special tokens.
                probe = self.tokenizer("a")["input_ids"]
                self._prepends_bos = bos_id is not None and probe[:1] == [bos_id]
            elif self.add_bos_token and bos_id is None:
                raise ValueError(
                    f"{self.key_prefix}add_bos_token is true but the tokenizer of "
                    f"{self.name_or_path!r} has no BOS token (Qwen2's, for one): set "
                    f"{setting_text(self.key_prefix, 'add_bos_token', 'false')}"
                )
            else:
                self._prepends_bos = bool(self.add_bos_token)
        return self._prepends_bos

    def _input_ids(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each (case-normalised) transcript as the model reads them."""
        texts = [normalise_case(text, self.text_case) for text in texts]
        if self.framed_by_special_tokens:
            return self.tokenizer(texts)["input_ids"]
        # The special tokens are chosen here, not by the tokenizer: some add an
        # EOS or chat markers, which are no part of the transcript.
        bos = [self.tokenizer.bos_token_id] if self.prepends_bos else []
        return [bos + ids for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    @property
    def _dropped_leading(self) -> int:
        """Input positions read but not returned: a decoder-only teacher's BOS."""
        return int(not self.framed_by_special_tokens and self.prepends_bos)

    def token_counts(self, texts: Sequence[str]) -> List[int]:
        """States of each transcript: its PLM tokens, ``[CLS]`` and ``[SEP]``
        included for an encoder, a decoder-only teacher's BOS not."""
        return [len(ids) - self._dropped_leading for ids in self._input_ids(texts)]

    def reading(self) -> dict:
        """How the states are read from the model, besides its weights: what a
        cache records, so that one read otherwise is not reused."""
        layers = int(self.model.config.num_hidden_layers)
        return dict(
            architecture=self.architecture,
            hidden_layer=self.hidden_layer % (layers + 1),  # -1 and L are one layer
            bos=self._dropped_leading == 1,
            text_case=self.text_case,
            dtype=self.dtype,
        )

    def reads_last_encoder_layer(self) -> bool:
        """The reading of every cache made before the reading was an option."""
        layers = int(self.model.config.num_hidden_layers)
        return self.reading() == dict(
            architecture="encoder", hidden_layer=layers, bos=False, text_case="keep",
            dtype="float32",
        )

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
        """SHA-256 of the weights, the config, the vocabulary and the reading
        (:meth:`reading`): what the states depend on."""
        digest = hashlib.sha256()
        # Where the model was read from and which library version saved it do not
        # change its states.
        config = {
            key: value for key, value in self.model.config.to_dict().items()
            if not key.startswith("_") and key != "transformers_version"
        }
        digest.update(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
        if not self.reads_last_encoder_layer():
            # Left out for BERT's last layer, so that caches dumped before other
            # readings existed keep their fingerprint.
            digest.update(json.dumps(self.reading(), sort_keys=True).encode("utf-8"))
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
        """Hidden states (layer ``hidden_layer``) of a batch of transcripts.

        Returns:
            ``(states (B, lt, dt) float32, lengths (B,), unk_count (B,))``;
            lengths count ``[CLS]`` and ``[SEP]`` for an encoder; a decoder-only
            teacher's BOS is dropped (see the module docstring).

        Raises:
            ValueError: a transcript needs more tokens than the PLM has
                positions, or has none to transport; the message names the
                utterance.
        """
        model = self.model
        if next(model.parameters()).device != device:
            model.to(device)
        ids = self._input_ids(texts)
        lengths = torch.tensor([len(row) for row in ids])
        dropped = self._dropped_leading

        def name(b):
            return utt_ids[b] if utt_ids is not None else f"batch item {b}"

        too_long = (lengths > self.max_positions).nonzero().flatten().tolist()
        if too_long:
            b = too_long[0]
            raise ValueError(
                f"Utterance {name(b)}: its transcript needs {int(lengths[b])} PLM tokens "
                f"(special tokens included) but {self.name_or_path!r} has "
                f"{self.max_positions} positions. Remove such utterances from the "
                f"training data (e.g. filter data/<set>/text by length)."
            )
        empty = (lengths - dropped < self.min_tokens).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"Utterance {name(empty[0])}: its transcript is empty, and a decoder-only "
                f"teacher has no [CLS]/[SEP] to transport instead. Remove utterances "
                f"with empty transcripts from the training data."
            )
        # Padded on the right whatever the tokenizer's padding_side: a causal
        # model's real tokens never attend to pads after them and keep positions
        # 0.., so a transcript's states do not depend on its batch (the cache
        # computes them in batches of any composition). Left padding would shift
        # the positions of the shorter transcripts.
        pad_id = self.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else pad_id  # masked out; Qwen2 and Llama define none
        input_ids = torch.full((len(ids), int(lengths.max())), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for b, row in enumerate(ids):
            input_ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[b, : len(row)] = 1
        unk_id = self.tokenizer.unk_token_id
        # Byte-level tokenizers (Qwen2's, GPT-2's) have no unknown token.
        unk_count = (
            (input_ids.masked_fill(attention_mask == 0, -1) == unk_id).sum(1)
            if unk_id is not None else torch.zeros(len(ids), dtype=torch.long)
        )
        inputs = dict(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        if self.framed_by_special_tokens and "token_type_ids" in self.tokenizer.model_input_names:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        # In its own dtype, not the training's autocast (--use_amp): the states
        # must be those a cache of the same fingerprint holds, and CPU autocast
        # runs a float32 teacher in bfloat16, 5x slower where the CPU lacks
        # bfloat16 instructions.
        with torch.autocast(device_type=device.type, enabled=False):
            if self.hidden_layer == -1:
                states = model(**inputs).last_hidden_state
            else:
                output = model(**inputs, output_hidden_states=True)
                states = output.hidden_states[self.hidden_layer]
        return states[:, dropped:].float(), (lengths - dropped).to(device), unk_count.to(device)
