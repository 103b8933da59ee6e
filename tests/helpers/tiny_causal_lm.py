"""Tiny decoder-only (causal) language models, built locally for the tests.

Random-initialised Qwen2 and Llama models with a byte-level BPE tokenizer
trained here on a few English sentences, saved with ``save_pretrained`` so
that the project loads them through the same ``from_pretrained`` path as a
hub model. The Llama-style tokenizer prepends ``<s>`` as Llama's does; the
Qwen2-style one has no BOS token, as Qwen2's.
"""

from pathlib import Path
from typing import Sequence

ENGLISH_SENTENCES = [
    "HE HOPED THERE WOULD BE STEW FOR DINNER", "THE CAT SAT ON THE MAT",
    "SHE SAID IT WAS A GOOD DAY", "WE WALKED TO THE RIVER AT NOON",
    "THEY DON'T KNOW WHERE THE BOOK IS", "A DOG RAN ACROSS THE GREEN FIELD",
    "THE OLD MAN READ HIS LETTERS", "IT WAS COLD IN THE MORNING",
]

ARCHITECTURES = ("qwen2", "llama")


def train_byte_level_bpe(sentences: Sequence[str], special_tokens: Sequence[str],
                         vocab_size: int = 300):
    """A byte-level BPE (GPT-2's, Qwen2's scheme) trained on ``sentences``, both cases."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = [*sentences, *(s.lower() for s in sentences)]
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def make_tiny_causal_lm(path: Path, architecture: str = "qwen2", hidden_size: int = 32,
                        num_hidden_layers: int = 2, padding_side: str = "right",
                        seed: int = 0) -> Path:
    """A ``num_hidden_layers``-layer ``architecture`` model and its tokenizer at ``path``.

    ``padding_side`` is saved in the tokenizer's config, as generation-oriented
    checkpoints often save ``left``.
    """
    import torch
    from tokenizers import processors
    from transformers import (
        LlamaConfig,
        LlamaModel,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2Model,
    )

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r}: choose one of {ARCHITECTURES}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if architecture == "llama":
        specials = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        tokenizer = train_byte_level_bpe(ENGLISH_SENTENCES, ["<unk>", "<s>", "</s>"])
        bos_id = tokenizer.token_to_id("<s>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    else:
        specials = dict(eos_token="<|endoftext|>")
        tokenizer = train_byte_level_bpe(ENGLISH_SENTENCES, ["<|endoftext|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, padding_side=padding_side, **specials)
    fast.save_pretrained(path)
    sizes = dict(
        vocab_size=fast.vocab_size + len(fast.all_special_tokens), hidden_size=hidden_size,
        intermediate_size=2 * hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    if architecture == "llama":
        LlamaModel(LlamaConfig(**sizes, bos_token_id=bos_id)).save_pretrained(path)
    else:
        Qwen2Model(Qwen2Config(**sizes)).save_pretrained(path)
    return path
