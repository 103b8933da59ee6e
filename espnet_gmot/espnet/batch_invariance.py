"""Exact batches for ESPnet ASR encoders: each utterance of a padded batch gets
its one-utterance encoder output (used by the greedy CTC decoder,
:mod:`espnet_gmot.bin.asr_inference_ctc_greedy`).

ESPnet's encoders are not padding-invariant; :class:`BatchInvariance` says where
padding leaks into an utterance and undoes it with hooks on a loaded model.
"""

from typing import Optional

import torch

from espnet_gmot.espnet.compat import make_pad_mask, pad_list

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
        more per utterance the larger the batch, while the layers after it
        gain from batches. Outputs are padded to the batch's frames; the
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
