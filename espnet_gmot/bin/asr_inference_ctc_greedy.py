#!/usr/bin/env python3
"""Batched greedy (best-path) CTC decoding for ESPnet ASR models.

The papers' decoding: encoder (with the adapter and fusion for ``model: gmot``),
CTC argmax per frame, repeats collapsed, blanks dropped. Utterances are read
through ESPnet's own data pipeline (``ASRTask.build_streaming_iterator``, the
model's preprocessing and collate function), decoded in batches of similar
length, and written in exactly the layout of ``espnet2.bin.asr_inference``:
``<output_dir>/1best_recog/{text,token,token_int,score}``, so asr.sh's job
splitting, merging and scoring (stages 12-13) work unchanged. It takes the same
arguments where they apply, including a ``--config`` decoding yaml, which must
describe greedy CTC (``beam_size: 1``, ``ctc_weight: 1.0``, no LM, no penalty,
``nbest: 1``); anything else is beam search, for ``espnet2.bin.asr_inference``.

Differences to ``espnet2.bin.asr_inference`` with ``beam_size: 1, ctc_weight: 1``
(CTC prefix search, one utterance at a time):

* ``score`` is the best path's log probability (the sum of the frames' largest
  CTC log posteriors), not the prefix search's prefix probability;
* prefix search with one beam can keep a prefix that no single best path
  spells, when the alignments that merge into one prefix outweigh the best
  frame-by-frame path (typically a token repeated across a weak blank), and it
  caps a hypothesis at one token fewer than the encoder has frames;
* ``<sos/eos>`` shares CTC's output layer but is never emitted;
* nothing else: a batch decodes every utterance exactly as it decodes alone
  (same encoder output to float rounding, hence the same best path), for
  ESPnet's Conformer, Transformer, Branchformer and E-Branchformer encoders.
  As ESPnet runs them they are not padding-invariant: an utterance encoded
  beside longer ones gets one or two frames more (the subsampled mask is
  rounded up), its time convolutions (Conformer convolution module, cgMLP,
  E-Branchformer's merge) read encoder states of padding after its end, the
  legacy relative attention (``rel_pos_type: legacy``, ESPnet's default)
  shifts its positions by the padded length, and a waveform frontend's STFT
  sees zeros where the utterance alone sees its reflected end.
  ``BatchInvariance`` (:mod:`espnet_gmot.espnet.batch_invariance`) undoes all
  four with hooks on the loaded model (without it, batches change some of
  the demo's test hypotheses; with it, none: ``bench/bench_decode.py``
  counts them). A model it cannot vouch for (another encoder, a pre- or
  post-encoder, another normaliser) is decoded one utterance at a time, with
  a warning, unless ``--allow_inexact_batches true``.

Speed: greedy decoding costs the encoder forward and nothing else; ESPnet's
beam-1 search adds, per output token, a CTC prefix score over the whole
vocabulary (with ``ctc_weight: 1.0`` it sets no pre-beam). The speed-up over
``espnet2.bin.asr_inference`` is therefore bounded by ESPnet's time over its
encoder's time (``bench/bench_decode.py`` prints both and the bound).
Batches lift greedy decoding above that bound by amortising the
encoder layers' per-operation overhead (the convolutional subsampling, which
gets slower per utterance in batches on a CPU, runs per utterance); on a GPU
they fill the device.
"""

import argparse
import logging
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_gmot.espnet.registry import register

# At import, not only under __main__: spawned workers import this module.
register()

from espnet2.fileio.datadir_writer import DatadirWriter  # noqa: E402
from espnet2.tasks.asr import ASRTask  # noqa: E402
from espnet2.text.build_tokenizer import build_tokenizer  # noqa: E402
from espnet2.text.token_id_converter import TokenIDConverter  # noqa: E402
from espnet2.torch_utils.set_all_random_seed import set_all_random_seed  # noqa: E402
from espnet2.utils import config_argparse  # noqa: E402
from espnet2.utils.types import str2bool, str2triple_str, str_or_none  # noqa: E402

from espnet_gmot.espnet.batch_invariance import BatchInvariance  # noqa: E402
from espnet_gmot.espnet.compat import TooShortUttError, get_commandline_args  # noqa: E402
from espnet_gmot.espnet.pretrained import download_and_unpack  # noqa: E402

BLANK_ID = 0  # ESPnet's CTC blank is the first token

# Batches read ahead and sorted by length before they are decoded.
READ_AHEAD_BATCHES = 16

# Utterances per batch by default: the best on a CPU over both model scales
# that bench/bench_decode.py times (--batch_sizes "1 4 8 16" prints the
# figures); larger batches spill the caches. A GPU wants larger ones.
DEFAULT_BATCH_SIZE = 8


@torch.no_grad()
def greedy_ctc_search(
    model, speech: torch.Tensor, speech_lengths: torch.Tensor, return_lengths: bool = False
):
    """Best-path CTC hypotheses of a padded batch.

    Returns, per utterance, the token ids (repeats collapsed, blanks dropped)
    and the best path's log probability; with ``return_lengths`` also the
    encoder's output lengths.
    """
    encoded, encoded_lengths = model.encode(speech, speech_lengths)
    if isinstance(encoded, tuple):  # intermediate CTC: (final, intermediate outputs)
        encoded = encoded[0]
    log_probs = model.ctc.log_softmax(encoded)  # (B, T, V)
    eos = getattr(model, "eos", None)
    if eos is not None and eos != BLANK_ID:
        # <sos/eos> shares the output layer but is never a CTC target; ESPnet's
        # prefix search never emits it inside a hypothesis either.
        log_probs = log_probs.clone()
        log_probs[..., eos] = float("-inf")
    best_scores, best_ids = log_probs.max(dim=-1)
    valid = torch.arange(best_ids.size(1), device=best_ids.device)[None, :] < encoded_lengths[:, None]
    path_scores = torch.where(valid, best_scores, torch.zeros_like(best_scores)).sum(1)
    # A frame starts a new token when it differs from the previous frame.
    changed = torch.ones_like(valid)
    changed[:, 1:] = best_ids[:, 1:] != best_ids[:, :-1]
    keep = (valid & changed & (best_ids != BLANK_ID)).cpu()
    best_ids, path_scores = best_ids.cpu(), path_scores.float().cpu()
    hypotheses = [
        (best_ids[b][keep[b]].tolist(), float(path_scores[b]))
        for b in range(best_ids.size(0))
    ]
    return (hypotheses, encoded_lengths.cpu()) if return_lengths else hypotheses


def _as_list(items):
    """Collate nothing: the reader below batches after sorting by length."""
    return items


def _windows(loader, size: int) -> Iterator[List[Tuple[str, Dict[str, np.ndarray]]]]:
    """The loader's utterances in consecutive windows of ``size``, input order."""
    window: List[Tuple[str, Dict[str, np.ndarray]]] = []
    for items in loader:
        window.extend(items)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


class GreedyCTCDecoder:
    """An ESPnet ASR model (any ``model:``, with CTC) and its token converter."""

    def __init__(
        self,
        asr_train_config: str,
        asr_model_file: Optional[str],
        device: str = "cpu",
        dtype: str = "float32",
        token_type: Optional[str] = None,
        bpemodel: Optional[str] = None,
    ):
        model, train_args = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
        model.to(dtype=getattr(torch, dtype)).eval()
        if getattr(model, "ctc", None) is None:
            raise ValueError(
                f"{asr_train_config}: the model has no CTC head, so greedy CTC decoding "
                "does not apply; decode with espnet2.bin.asr_inference"
            )
        self.model, self.train_args, self.device, self.dtype = model, train_args, device, dtype
        token_type = token_type or train_args.token_type
        bpemodel = bpemodel or train_args.bpemodel
        if token_type is None or (token_type == "bpe" and bpemodel is None):
            self.tokenizer = None
        else:
            self.tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel)
        self.converter = TokenIDConverter(token_list=model.token_list)
        self.collate = ASRTask.build_collate_fn(train_args, False)
        self.batch_invariance = BatchInvariance(model)
        if self.batch_invariance.reason is not None:
            logging.warning(
                f"{asr_train_config}: a batch cannot give every utterance its "
                f"one-utterance encoder output ({self.batch_invariance.reason})"
            )

    @property
    def exact_batches(self) -> bool:
        """Whether a batch decodes every utterance as it decodes alone."""
        return self.batch_invariance.reason is None

    def __call__(self, items: Sequence[Tuple[str, Dict[str, np.ndarray]]]):
        """Decode ``(key, data)`` items; yields ``(key, text, tokens, token_ids, score)``."""
        _, batch = self.collate(list(items))
        speech = batch["speech"].to(self.device, getattr(torch, self.dtype))
        lengths = batch["speech_lengths"].to(self.device)
        keys = [key for key, _ in items]
        # asr.sh's stage 12 computes the real-time factor from these two lines;
        # a batch counts as one decoding of its total length.
        logging.info(f"speech length: {int(lengths.sum())}")
        try:
            hypotheses, encoded_lengths = greedy_ctc_search(
                self.model, speech, lengths, return_lengths=True)
        except TooShortUttError as err:
            # As espnet2.bin.asr_inference does for an utterance the encoder's
            # subsampling cannot take (the batch is length-sorted: all are).
            logging.warning(f"Utterances {keys} {err}")
            for key in keys:
                yield key, " ", ["<space>"], [2], 0.0
            return
        logging.info(f"best hypo: batch of {len(keys)} decoded")
        for key, (token_ids, score), frames in zip(keys, hypotheses, encoded_lengths.tolist()):
            if frames <= 0:
                # Too short for the subsampling: alone it raises TooShortUttError
                # (above); in a batch of longer ones it gets no frame.
                logging.warning(f"Utterance {key} is too short for the encoder's subsampling")
                yield key, " ", ["<space>"], [2], 0.0
                continue
            tokens = self.converter.ids2tokens(token_ids)
            text = self.tokenizer.tokens2text(tokens) if self.tokenizer is not None else None
            yield key, text, tokens, token_ids, score


def check_greedy_config(args: argparse.Namespace):
    """The decoding options must describe greedy CTC; name the first that does not."""
    required = dict(beam_size=1, ctc_weight=1.0, lm_weight=0.0, ngram_weight=0.0,
                    penalty=0.0, nbest=1)
    for key, value in required.items():
        given = getattr(args, key)
        # lm_weight / ngram_weight only matter when an LM is given.
        if key == "lm_weight" and args.lm_train_config is None:
            continue
        if key == "ngram_weight" and args.ngram_file is None:
            continue
        if given != value:
            raise ValueError(
                f"{key}: {given} is not greedy CTC decoding ({key}: {value}); "
                "for beam search use espnet2.bin.asr_inference"
            )
    for key in ("lm_train_config", "lm_file", "word_lm_train_config", "word_lm_file",
                "ngram_file"):
        if getattr(args, key) is not None:
            raise ValueError(
                f"--{key} is given, but greedy CTC decoding uses no language model; "
                "use espnet2.bin.asr_inference for LM shallow fusion"
            )


def resolve_model_files(args: argparse.Namespace) -> None:
    """``--model_tag`` -> ``--asr_train_config`` and ``--asr_model_file``."""
    if args.model_tag is not None:
        files = download_and_unpack(args.model_tag)
        args.asr_train_config = files["asr_train_config"]
        args.asr_model_file = files["asr_model_file"]
    for key in ("asr_train_config", "asr_model_file"):
        if getattr(args, key) is None:
            raise ValueError(f"--{key} is missing: give --asr_train_config and "
                             "--asr_model_file, or a packed model with --model_tag")


def inference(args: argparse.Namespace):
    check_greedy_config(args)
    resolve_model_files(args)
    if args.ngpu > 1:
        raise NotImplementedError("only single GPU decoding is supported")
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    set_all_random_seed(args.seed)
    device = "cuda" if args.ngpu >= 1 else "cpu"
    decoder = GreedyCTCDecoder(
        args.asr_train_config, args.asr_model_file, device=device, dtype=args.dtype,
        token_type=args.token_type, bpemodel=args.bpemodel,
    )
    batch_size = args.batch_size
    if batch_size > 1 and not decoder.exact_batches and not args.allow_inexact_batches:
        logging.warning(
            f"--batch_size {batch_size} would change hypotheses of this model "
            f"({decoder.batch_invariance.reason}): decoding one utterance at a time; "
            "--allow_inexact_batches true batches anyway"
        )
        batch_size = 1
    loader = ASRTask.build_streaming_iterator(
        args.data_path_and_name_and_type,
        dtype=args.dtype,
        batch_size=1,
        key_file=args.key_file,
        num_workers=args.num_workers,
        preprocess_fn=ASRTask.build_preprocess_fn(decoder.train_args, False),
        collate_fn=_as_list,
        allow_variable_data_keys=args.allow_variable_data_keys,
        inference=True,
    )
    with DatadirWriter(args.output_dir) as writer:
        best = writer["1best_recog"]
        for window in _windows(loader, batch_size * READ_AHEAD_BATCHES):
            # Batches of similar length keep the padding small; the results are
            # written in the input order, as espnet2.bin.asr_inference writes them.
            by_length = sorted(window, key=lambda item: -len(item[1]["speech"]))
            results = {}
            for start in range(0, len(by_length), batch_size):
                for key, *result in decoder(by_length[start : start + batch_size]):
                    results[key] = result
            for key, _ in window:
                text, tokens, token_ids, score = results[key]
                best["token"][key] = " ".join(tokens)
                best["token_int"][key] = " ".join(map(str, token_ids))
                best["score"][key] = str(score)
                if text is not None:
                    best["text"][key] = text


def get_parser() -> config_argparse.ArgumentParser:
    parser = config_argparse.ArgumentParser(
        description="Greedy CTC decoding (ESPnet ASR models, espnet-gmot's model: gmot)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log_level", type=lambda x: x.upper(), default="INFO",
                        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"))
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--ngpu", type=int, default=0, help="0: CPU, 1: one GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument("--num_workers", type=int, default=1)

    group = parser.add_argument_group("Input data related")
    group.add_argument("--data_path_and_name_and_type", type=str2triple_str,
                       required=True, action="append")
    group.add_argument("--key_file", type=str_or_none)
    group.add_argument("--allow_variable_data_keys", type=str2bool, default=False)

    group = parser.add_argument_group("The model configuration related")
    group.add_argument("--asr_train_config", type=str_or_none)
    group.add_argument("--asr_model_file", type=str_or_none)
    group.add_argument("--model_tag", type=str_or_none,
                       help="a packed model (asr.sh stage 14's zip, the directory it was "
                            "unzipped to, or an espnet_model_zoo name), as "
                            "espnet2.bin.asr_inference takes it: replaces --asr_train_config "
                            "and --asr_model_file")

    group = parser.add_argument_group("Decoding: greedy CTC needs these values")
    group.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                       help="utterances per batch, length-sorted; each decodes as "
                            "it does alone (see the module docstring)")
    group.add_argument("--allow_inexact_batches", type=str2bool, default=False,
                       help="batch a model whose batches cannot be made exact "
                            "(else it is decoded one utterance at a time)")
    group.add_argument("--beam_size", type=int, default=1)
    group.add_argument("--ctc_weight", type=float, default=1.0)
    group.add_argument("--penalty", type=float, default=0.0)
    group.add_argument("--nbest", type=int, default=1)
    group.add_argument("--lm_weight", type=float, default=0.0)
    group.add_argument("--ngram_weight", type=float, default=0.0)
    group.add_argument("--lm_train_config", type=str_or_none)
    group.add_argument("--lm_file", type=str_or_none)
    group.add_argument("--word_lm_train_config", type=str_or_none)
    group.add_argument("--word_lm_file", type=str_or_none)
    group.add_argument("--ngram_file", type=str_or_none)
    group.add_argument("--maxlenratio", type=float, default=0.0,
                       help="no effect: CTC emits at most one token per frame")
    group.add_argument("--minlenratio", type=float, default=0.0, help="no effect")
    group.add_argument("--normalize_length", type=str2bool, default=False, help="no effect")

    group = parser.add_argument_group("Text converter related")
    group.add_argument("--token_type", type=str_or_none, default=None,
                       help="default: the model's training token_type")
    group.add_argument("--bpemodel", type=str_or_none, default=None,
                       help="default: the model's training bpemodel")
    return parser


def main(cmd=None):
    print(get_commandline_args(), file=sys.stderr)
    args = get_parser().parse_args(cmd)
    inference(args)


if __name__ == "__main__":
    main()
