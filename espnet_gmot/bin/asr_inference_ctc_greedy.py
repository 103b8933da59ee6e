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
  ``BatchInvariance`` undoes all four with hooks on the loaded model (before
  it, 18 of the demo's 100 test hypotheses changed at batch 64; after it,
  none). A model it cannot vouch for (another encoder, a pre- or
  post-encoder, another normaliser) is decoded one utterance at a time, with
  a warning, unless ``--allow_inexact_batches true``.

Speed: greedy decoding costs the encoder forward and nothing else; ESPnet's
beam-1 search adds, per output token, a CTC prefix score over the whole
vocabulary (with ``ctc_weight: 1.0`` it sets no pre-beam). The speed-up over
``espnet2.bin.asr_inference`` is therefore bounded by ESPnet's time over its
encoder's time (``bench/bench_decode.py`` prints both): about 4x for the
demo's model on a CPU, where ESPnet spends a quarter of its time in the
encoder. Batches lift greedy decoding above that bound by amortising the
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
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask, pad_list  # noqa: E402
from espnet.nets.pytorch_backend.transformer.subsampling import (  # noqa: E402
    TooShortUttError,
)
from espnet.utils.cli_utils import get_commandline_args  # noqa: E402

BLANK_ID = 0  # ESPnet's CTC blank is the first token

# Batches read ahead and sorted by length before they are decoded.
READ_AHEAD_BATCHES = 16

# Utterances per batch by default: the best on a CPU over both scales that
# bench/bench_decode.py measures (2 threads, ms per utterance at batch 1/4/8/16:
# demo model 6.7/4.5/3.6/3.5, AISHELL-size Conformer 118/98/114/142; larger
# batches spill the caches). A GPU wants larger ones.
DEFAULT_BATCH_SIZE = 8

# Encoders whose layers mix frames only through masked self-attention and
# convolutions along time (which the hooks below make exact); their input
# layers (Conv2dSubsampling*, Conv1dSubsampling*, linear) read no frame past an
# output frame's receptive field, so a valid output frame sees valid input only.
PADDING_INVARIANT_ENCODERS = (
    "ConformerEncoder",
    "TransformerEncoder",
    "BranchformerEncoder",
    "EBranchformerEncoder",
)
PADDING_INVARIANT_NORMALIZERS = ("GlobalMVN", "UtteranceMVN")


def _module_ids(module: Optional[torch.nn.Module]) -> set:
    return set() if module is None else {id(m) for m in module.modules()}


class PerUtteranceFrontend(torch.nn.Module):
    """A frontend run on each utterance's own samples, its features then padded.

    A batched STFT sees the zeros after a short utterance where the utterance
    alone sees its reflected end (``center=True``), so the last frames' features
    differ; per utterance they are those of one-utterance decoding. The
    frontend is a small part of the decoding time.
    """

    def __init__(self, frontend: torch.nn.Module):
        super().__init__()
        self.frontend = frontend

    def output_size(self) -> int:
        return self.frontend.output_size()

    def forward(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        if speech.size(0) == 1:
            return self.frontend(speech, speech_lengths)
        feats, feats_lengths = [], []
        for one, length in zip(speech, speech_lengths):
            feat, feat_length = self.frontend(one[None, : int(length)], length[None])
            feats.append(feat[0, : int(feat_length[0])])
            feats_lengths.append(feat_length)
        return pad_list(feats, 0.0), torch.cat(feats_lengths)


class BatchInvariance:
    """Makes ``model.encode`` of a padded batch give every utterance exactly its
    one-utterance encoder output (to float rounding), or says why it cannot.

    Attention is masked, the new relative positional encoding depends on the
    offset only, the subsampling's valid outputs read valid inputs only, the
    normalisation is per frame (GlobalMVN) or over the valid frames
    (UtteranceMVN), and espnet-gmot's adapter and fusion (TOT eq. 22) are per
    frame. Padding leaks into an utterance's frames in ESPnet's Conformer,
    Transformer, Branchformer and E-Branchformer encoders in four places:

    * the subsampled mask: ESPnet slices the input mask (``[:, :, :-2:2]`` per
      stride-2 convolution), which rounds a short utterance's length up, so in
      a batch it gets one or two frames more than alone, computed from
      padding, and read by attention. The input layer's forward hook rebuilds
      the mask from the lengths its convolutions give each utterance alone;
    * a convolution along time with zero ("same") padding inside an encoder
      layer (the Conformer's ``depthwise_conv``, the cgMLP's gating ``conv`` of
      Branchformer and E-Branchformer, E-Branchformer's
      ``depthwise_conv_fusion``) reads the frames after an utterance's end,
      which in a batch hold encoder states of padding instead of zeros. A
      forward pre-hook zeroes the padded frames of its input: the convolution
      then reads what its own zero padding gives the single utterance;
    * the legacy relative attention (``rel_pos_type: legacy``, the default)
      shifts positional scores by the padded length: shifted per utterance;
    * a waveform frontend (STFT): run per utterance (``PerUtteranceFrontend``).

    ``reason`` is None when the hooks are in place, else why batches cannot be
    made exact for this model (then nothing is changed). ``remove()`` undoes
    them.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.handles = []
        self.original_frontend = None
        self.valid = None  # (batch, frames) at the layers' resolution; None: all valid
        self.input_lengths = None
        self.legacy_attentions = []
        self.subsampling = None
        self.reason = self._unsupported(model)
        if self.reason is None:
            self._install()

    @staticmethod
    def _unsupported(model) -> Optional[str]:
        encoder = getattr(model, "encoder", None)
        name = type(encoder).__name__
        if name not in PADDING_INVARIANT_ENCODERS:
            return f"encoder {name} is not one of {', '.join(PADDING_INVARIANT_ENCODERS)}"
        for part in ("preencoder", "postencoder"):
            if getattr(model, part, None) is not None:
                return f"the model has a {part} ({type(getattr(model, part)).__name__})"
        normalize = getattr(model, "normalize", None)
        if normalize is not None and type(normalize).__name__ not in PADDING_INVARIANT_NORMALIZERS:
            return f"normalize {type(normalize).__name__} is not per frame or per utterance"
        embed_modules = _module_ids(getattr(encoder, "embed", None))
        for module_name, module in encoder.named_modules():
            in_embed = id(module) in embed_modules
            if isinstance(module, torch.nn.Conv2d) and not in_embed:
                return f"encoder.{module_name} is a 2-D convolution inside the layers"
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
                padded = module.padding == "same" or any(p > 0 for p in module.padding)
                if padded and in_embed:
                    return f"encoder.{module_name} pads the input layer's convolution"
                if padded and module.padding_mode != "zeros":
                    return f"encoder.{module_name} pads with {module.padding_mode}, not zeros"
        return None

    def _install(self):
        encoder = self.model.encoder
        self.handles.append(encoder.register_forward_pre_hook(self._encoder_input))
        if getattr(encoder, "embed", None) is not None:
            self.handles.append(encoder.embed.register_forward_hook(self._embed_output))
        embed_modules = _module_ids(encoder.embed)
        for module in encoder.modules():
            if (
                isinstance(module, torch.nn.Conv1d)
                and id(module) not in embed_modules
                and (module.padding == "same" or any(p > 0 for p in module.padding))
            ):
                self.handles.append(module.register_forward_pre_hook(self._zero_padded_frames))
        if encoder.embed is not None and any(
            isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) for m in encoder.embed.modules()
        ):
            encoder.embed.forward = self._per_utterance_subsampling(encoder.embed.forward)
            self.subsampling = encoder.embed
        for module in encoder.modules():
            if type(module).__name__ == "LegacyRelPositionMultiHeadedAttention":
                module.rel_shift = self._per_utterance_rel_shift(module.rel_shift)
                self.legacy_attentions.append(module)
        if getattr(self.model, "frontend", None) is not None:
            self.original_frontend = self.model.frontend
            self.model.frontend = PerUtteranceFrontend(self.original_frontend)

    def remove(self):
        """Undo the hooks and the frontend wrapper."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.subsampling is not None:
            del self.subsampling.forward  # the class's own again
            self.subsampling = None
        for module in self.legacy_attentions:
            del module.rel_shift  # the class's own again
        self.legacy_attentions = []
        if self.original_frontend is not None:
            self.model.frontend = self.original_frontend
            self.original_frontend = None

    def _set_valid(self, valid: torch.Tensor):
        self.valid = None if bool(valid.all()) else valid

    def _encoder_input(self, module, args):
        # Input layers without a mask (input_layer: null) keep the input's frames.
        feats, lengths = args[0], args[1]
        self.input_lengths = lengths
        self._set_valid(~make_pad_mask(lengths, maxlen=feats.size(1)).to(feats.device))

    def subsampled_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames the input layer's convolutions give an utterance of ``lengths``
        frames on its own (``floor((n + 2p - d(k-1) - 1) / s) + 1`` per
        convolution along time)."""
        for conv in self.model.encoder.embed.modules():
            if isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d)):
                k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
                lengths = torch.div(lengths + 2 * p - d * (k - 1) - 1, s, rounding_mode="floor") + 1
        return lengths.clamp_min(0)

    def _embed_output(self, module, args, output):
        # A subsampling returns (states, mask); a linear input layer returns
        # states or (states, relative positional embeddings).
        if not (isinstance(output, tuple) and len(output) == 2
                and isinstance(output[1], torch.Tensor) and output[1].dtype == torch.bool):
            return None
        states, mask = output  # mask: (batch, 1, frames), True on valid frames
        # ESPnet subsamples the mask by slicing (mask[:, :, :-2:2] per stride-2
        # convolution), which rounds a short utterance's length up in a batch:
        # it gets one or two frames more than alone, computed from padding, and
        # attention lets every frame read them. The mask is rebuilt from the
        # lengths the convolutions give each utterance alone.
        lengths = self.subsampled_lengths(self.input_lengths.to(mask.device))
        valid = torch.arange(mask.size(-1), device=mask.device)[None, :] < lengths[:, None]
        self._set_valid(valid)
        return states, valid[:, None, :]

    def _per_utterance_subsampling(self, subsample):
        """The convolutional subsampling run on each utterance's own frames.

        Not for exactness (its valid outputs read valid inputs only) but for
        speed on a CPU: a batched 2-D convolution over the padded input costs
        more per utterance the larger the batch (1.4 ms alone, 4.8 ms in a
        batch of 16 for the demo's model on 2 cores), while the layers after
        it gain from batches. Outputs are padded to the batch's frames; the
        positional embeddings are the longest utterance's, which spans them.
        """

        def forward(x: torch.Tensor, x_mask: Optional[torch.Tensor], *args, **kwargs):
            if x.size(0) == 1 or x_mask is None or self.input_lengths is None:
                return subsample(x, x_mask, *args, **kwargs)
            lengths = self.input_lengths.tolist()
            outputs = [subsample(x[b : b + 1, :n], x_mask[b : b + 1, :, :n], *args, **kwargs)
                       for b, n in enumerate(lengths)]
            longest = max(range(len(lengths)), key=lambda b: lengths[b])
            states = [out[0][0] if isinstance(out[0], tuple) else out[0] for out in outputs]
            padded = pad_list([state[0] for state in states], 0.0)
            mask = pad_list([out[1][0, 0] for out in outputs], False)[:, None, :]
            if isinstance(outputs[longest][0], tuple):
                return (padded, outputs[longest][0][1]), mask
            return padded, mask

        return forward

    def _per_utterance_rel_shift(self, rel_shift):
        """ESPnet's legacy relative attention (``rel_pos_type: legacy``) shifts
        the (query, key) position scores by the padded length: key ``j`` of
        query ``i <= j`` gets the positional score of index ``T - 1 - (i - j)``.
        The scores' top-left ``n x n`` block of an utterance of ``n`` frames
        is the one it computes alone (position ``k`` reads ``pe[k]`` whatever
        ``T``); shifted on their own, each block gives its scores alone."""

        def shift(scores: torch.Tensor) -> torch.Tensor:
            shifted = rel_shift(scores)
            if self.valid is None:
                return shifted
            for b, frames in enumerate(self.valid.sum(1).tolist()):
                if frames < scores.size(-1):
                    block = rel_shift(scores[b : b + 1, :, :frames, :frames])
                    shifted[b, :, :frames, :frames] = block[0]
            return shifted

        return shift

    def _zero_padded_frames(self, module, args):
        if self.valid is None:
            return None
        x = args[0]  # (batch, channels, frames)
        if x.size(-1) != self.valid.size(1):
            raise RuntimeError(
                f"a convolution sees {x.size(-1)} frames where the encoder's input layer "
                f"gave {self.valid.size(1)}: batches cannot be made exact for this "
                "encoder; decode with --batch_size 1"
            )
        return (x.masked_fill(~self.valid[:, None, :], 0.0),) + tuple(args[1:])


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


def inference(args: argparse.Namespace):
    check_greedy_config(args)
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
    group.add_argument("--asr_train_config", type=str, required=True)
    group.add_argument("--asr_model_file", type=str, required=True)

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
