"""ESPnet glue: any ESPnet ASR model with OT-based PLM knowledge transfer (``model: gmot``)."""

import inspect
import logging
import math
import os
from types import MappingProxyType
from typing import Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.abs_decoder import AbsDecoder
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.postencoder.abs_postencoder import AbsPostEncoder
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.torch_utils.device_funcs import force_gatherable
from typeguard import typechecked

from espnet_gmot.espnet.tokens import token_ids_to_text
from espnet_gmot.transfer import OTKnowledgeTransfer, PLMTeacher

# Set by the PLM cache's coverage check (espnet_gmot.espnet.plm_cache) so that
# the per-batch check below can name the cache; an environment variable reaches
# ESPnet's spawned workers too.
CACHES_IN_USE_ENV = "ESPNET_GMOT_PLM_CACHES"

# Constructor arguments that ESPnet builds from other yaml sections.
_BUILT_BY_ESPNET = (
    "self", "unknown", "vocab_size", "token_list", "frontend", "specaug", "normalize",
    "preencoder", "encoder", "postencoder", "decoder", "ctc", "joint_network",
)
# ESPnet's default CTC weight of a model with a decoder, read from ESPnetASRModel.
_ESPNET_CTC_WEIGHT = inspect.signature(ESPnetASRModel.__init__).parameters["ctc_weight"].default

# The defaults of the loss weights that model: gmot adds to ESPnet's model_conf
# (the constructor takes them from here; transfer_conf's keys have theirs in
# espnet_gmot.transfer.module.TRANSFER_DEFAULTS), for whoever needs the value of
# a key that a config leaves out (the recipes' scripts).
MODEL_DEFAULTS = MappingProxyType({"asr_weight": 0.3, "transfer_weight": 1.0})


class ESPnetGMOTModel(ESPnetASRModel):
    """ESPnet's ASR model plus OT-BERT / TOT-CAKT / GM-OT knowledge transfer.

    Everything ``model: espnet`` takes works unchanged: CTC-only (the papers'
    model, no decoder), hybrid CTC/attention (a decoder and ESPnet's
    ``ctc_weight``), intermediate CTC (``interctc_weight``), transducers, any
    frontend, encoder and postencoder. The ASR loss ``L_asr`` is ESPnet's own,
    computed by :class:`ESPnetASRModel` (hybrid CTC/attention, intermediate CTC
    included), on the fused features ``H_at`` (TOT eq. 22): CTC *and* the
    decoder read them, and :meth:`encode` returns them, so ESPnet's
    ``Speech2Text`` (joint CTC/attention beam search) and the greedy CTC
    decoder decode this model unchanged and without the PLM. The total loss is
    (TOT eq. 24, with ``L_ctc`` generalised to ESPnet's ASR loss)::

        loss = asr_weight * L_asr + (1 - asr_weight) * transfer_weight * (L_align + L_fgw)

    The transfer taps the final encoder output (after the postencoder), the
    ``H_ca`` of the papers. With intermediate CTC the encoder also returns
    intermediate outputs; they feed ESPnet's intermediate CTC unchanged, not
    the transfer: the fusion adds the transferred features back onto the layer
    they were adapted from (eq. 22), and only the final layer feeds CTC and the
    decoder, so tapping another layer would need a second fusion path that
    the papers do not have.

    PLM states come from the batch when the data has a ``plm_states`` key
    (precomputed with ``python -m espnet_gmot.bin.dump_plm_states``), otherwise
    from the frozen teacher ``plm_conf.name_or_path``, loaded on first use.

    Args (besides ESPnet's, which keep ESPnet's meaning):
        ctc_weight: ESPnet's CTC weight against the attention decoder. Default:
            1.0 without a decoder (CTC-only), ESPnet's 0.5 with one.
        asr_weight: ``lambda`` of TOT eq. 24 (0.3 in the papers): the share of
            the ASR loss against the transfer losses. In the papers' CTC-only
            model ``L_asr`` is ``L_ctc``.
        transfer_weight: ``w >= 0`` of TOT eq. 24, weight of ``L_align + L_fgw``.
        transfer_conf: arguments of :class:`OTKnowledgeTransfer` (``plm_dim``,
            ``gw_weight``, ``temporal_weight``, ``epsilon``, ``fusion_scale``, ...).
        plm_conf: arguments of :class:`PLMTeacher`: ``name_or_path`` (default
            ``bert-base-chinese``), ``local_files_only``, and for other teachers
            ``architecture`` (``encoder`` or ``decoder_only``), ``hidden_layer``,
            ``add_bos_token`` and ``text_case``; ``dtype`` (``float32``,
            ``bfloat16`` or ``float16``) holds and runs the teacher in that
            precision, under ``--use_amp`` too.
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        token_list: Union[Tuple[str, ...], List[str]],
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        normalize: Optional[AbsNormalize],
        preencoder: Optional[AbsPreEncoder],
        encoder: AbsEncoder,
        postencoder: Optional[AbsPostEncoder],
        decoder: Optional[AbsDecoder],
        ctc: CTC,
        joint_network: Optional[torch.nn.Module] = None,
        aux_ctc: Optional[dict] = None,
        ctc_weight: Optional[float] = None,
        interctc_weight: float = 0.0,
        asr_weight: float = MODEL_DEFAULTS["asr_weight"],
        transfer_weight: float = MODEL_DEFAULTS["transfer_weight"],
        transfer_conf: Optional[dict] = None,
        plm_conf: Optional[dict] = None,
        ignore_id: int = -1,
        lsm_weight: float = 0.0,
        length_normalized_loss: bool = False,
        report_cer: bool = True,
        report_wer: bool = True,
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        transducer_multi_blank_durations: Optional[List] = None,
        transducer_multi_blank_sigma: float = 0.05,
        sym_sos: str = "<sos/eos>",
        sym_eos: str = "<sos/eos>",
        autocast_frontend: bool = False,
        extract_feats_in_collect_stats: bool = True,
        lang_token_id: int = -1,
        **unknown,
    ):
        if unknown:
            known = sorted(
                k for k in inspect.signature(type(self).__init__).parameters
                if k not in _BUILT_BY_ESPNET
            )
            raise ValueError(
                f"Unknown key(s) {sorted(unknown)} in model_conf for model: gmot. "
                f"Known keys: {known}"
            )
        has_decoder = decoder is not None or joint_network is not None
        if ctc_weight is None:
            ctc_weight = _ESPNET_CTC_WEIGHT if has_decoder else 1.0
        elif not has_decoder and ctc_weight < 1.0:
            # Earlier versions of model: gmot read ctc_weight as the papers' lambda.
            raise ValueError(
                f"model_conf.ctc_weight is {ctc_weight} but the model has no decoder. "
                f"In model: gmot, ctc_weight has ESPnet's meaning (CTC against the "
                f"attention decoder; a model without a decoder is CTC-only, 1.0). The "
                f"papers' lambda (TOT eq. 24, the ASR loss against the transfer losses) "
                f"is model_conf.asr_weight: write `asr_weight: {ctc_weight}` and drop "
                f"`ctc_weight`, or add a `decoder:` for a hybrid CTC/attention model."
            )
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"model_conf.ctc_weight must lie in [0, 1], got {ctc_weight}")
        if not 0.0 <= asr_weight <= 1.0:
            raise ValueError(f"model_conf.asr_weight must lie in [0, 1], got {asr_weight}")
        if not 0.0 <= interctc_weight < 1.0:
            raise ValueError(
                f"model_conf.interctc_weight must lie in [0, 1), got {interctc_weight}"
            )
        if not (math.isfinite(transfer_weight) and transfer_weight >= 0.0):
            raise ValueError(
                f"model_conf.transfer_weight must be >= 0 and finite, got {transfer_weight}"
            )
        if not 0.0 <= lsm_weight < 1.0:
            raise ValueError(f"model_conf.lsm_weight must lie in [0, 1), got {lsm_weight}")
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            decoder=decoder,
            ctc=ctc,
            joint_network=joint_network,
            aux_ctc=aux_ctc,
            ctc_weight=ctc_weight,
            interctc_weight=interctc_weight,
            ignore_id=ignore_id,
            lsm_weight=lsm_weight,
            length_normalized_loss=length_normalized_loss,
            report_cer=report_cer,
            report_wer=report_wer,
            sym_space=sym_space,
            sym_blank=sym_blank,
            transducer_multi_blank_durations=transducer_multi_blank_durations or [],
            transducer_multi_blank_sigma=transducer_multi_blank_sigma,
            sym_sos=sym_sos,
            sym_eos=sym_eos,
            autocast_frontend=autocast_frontend,
            extract_feats_in_collect_stats=extract_feats_in_collect_stats,
            lang_token_id=lang_token_id,
        )
        self.asr_weight = asr_weight
        self.transfer_weight = transfer_weight
        acoustic_dim = (
            postencoder.output_size() if postencoder is not None else encoder.output_size()
        )
        self.transfer = _build_named(
            OTKnowledgeTransfer, "model_conf.transfer_conf", transfer_conf or {},
            acoustic_dim=acoustic_dim, key_prefix="model_conf.transfer_conf.",
        )
        self.teacher = _build_named(
            PLMTeacher, "model_conf.plm_conf", plm_conf or {},
            setting="model_conf.plm_conf.name_or_path", key_prefix="model_conf.plm_conf.",
        )
        self._cache_tokenizer_missing = False
        # Set by forward() while ESPnet's forward runs: encode() puts the
        # adapted features H_A there for the transfer losses.
        self._adapted_sink: Optional[list] = None

    def encode(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """ESPnet's encoder, then adapter and fusion: ``H_at`` (TOT eq. 22).

        What CTC and the decoder read, in training and decoding. With
        intermediate CTC, ``((H_at, intermediate outputs), lengths)`` as ESPnet's.
        """
        encoder_out, lengths = super().encode(speech, speech_lengths)
        intermediate = None
        if isinstance(encoder_out, tuple):
            encoder_out, intermediate = encoder_out
        adapted = self.transfer.adapt(encoder_out)
        fused = self.transfer.fuse(encoder_out, adapted)
        if self._adapted_sink is not None:
            self._adapted_sink.append((adapted, lengths))
        if intermediate is not None:
            return (fused, intermediate), lengths
        return fused, lengths

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """ESPnet's ASR loss on the fused features plus the transfer losses (TOT eq. 24).

        Stats: ESPnet's (``loss_ctc``, ``cer_ctc``, ``loss_att``, ``acc``,
        ``cer``, ``wer``, ``loss_interctc_layer<n>``, ... as the model has
        them), ``loss_asr`` (ESPnet's total), ``loss_align``, ``loss_fgw``, the
        OT diagnostics and ``loss`` (the total above).
        """
        self._adapted_sink = []
        try:
            loss_asr, stats, _ = super().forward(
                speech, speech_lengths, text, text_lengths, **kwargs
            )
            (adapted, adapted_lengths), = self._adapted_sink
        finally:
            self._adapted_sink = None
        text = text[:, : text_lengths.max()]

        plm_states, plm_lengths, unk_count = self._plm_states(text, text_lengths, kwargs)
        transfer = self.transfer.transfer_losses(
            adapted, adapted_lengths, plm_states.to(adapted.device), plm_lengths.to(adapted.device),
            framed_by_special_tokens=self.teacher.framed_by_special_tokens,
        )
        loss_asr = loss_asr.reshape(())  # ESPnet returns it gathered, shape (1,)
        loss = self.asr_weight * loss_asr + (
            1.0 - self.asr_weight
        ) * self.transfer_weight * (transfer.align + transfer.transport)

        stats.update(
            loss=loss.detach(),
            loss_asr=loss_asr.detach(),
            loss_align=transfer.align.detach(),
            loss_fgw=transfer.transport.detach(),
            **transfer.stats,
        )
        if unk_count is not None:
            stats["plm_unk_rate"] = unk_count.sum().float() / plm_lengths.sum().clamp_min(1)
        loss, stats, weight = force_gatherable((loss, stats, speech.shape[0]), loss.device)
        return loss, stats, weight

    def _plm_states(self, text, text_lengths, kwargs):
        """PLM states from the batch's ``plm_states`` key, else from the teacher."""
        utt_ids = kwargs.get("utt_id")
        if "plm_states" in kwargs:
            # ESPnet's collate pads the key and adds its lengths; a float16 cache
            # is read as float32 here.
            states = kwargs["plm_states"].float()
            lengths = kwargs["plm_states_lengths"].long()
            self._check_cached_lengths(text, text_lengths, states, lengths, utt_ids)
            return states, lengths, None
        return self.teacher.encode(self._transcripts(text, text_lengths), text.device, utt_ids=utt_ids)

    def _transcripts(self, text, text_lengths) -> List[str]:
        # A byte-level tokenizer (Qwen2's) has no unknown token: ESPnet's <unk>
        # is then left out rather than spelt as text the teacher would read.
        unk = self.teacher.tokenizer.unk_token or ""
        return [
            token_ids_to_text(text[b, : int(text_lengths[b])].tolist(), self.token_list, unk)
            for b in range(text.size(0))
        ]

    def _check_cached_lengths(self, text, text_lengths, states, lengths, utt_ids):
        """Cached states must have one vector per PLM token of the transcript.

        A cache made from other transcripts (or another PLM) otherwise trains on
        wrong targets silently, or fails deep in the OT solver. Needs only the
        PLM's tokenizer; without one (a machine that has only the cache) the
        bounds are still checked.
        """
        expected = None
        if not self._cache_tokenizer_missing:
            try:
                expected = self.teacher.token_counts(self._transcripts(text, text_lengths))
            except OSError as err:
                self._cache_tokenizer_missing = True
                logging.warning(
                    f"Cannot load the tokenizer of {self.teacher.name_or_path!r} "
                    f"({err}); cached PLM states are checked only for plausible "
                    f"lengths, not against their transcripts."
                )
        for b, length in enumerate(lengths.tolist()):
            if expected is not None:
                bad = length != expected[b]
                wanted = f"its transcript has {expected[b]} PLM tokens"
            else:
                bad = not self.teacher.min_tokens <= length <= states.size(1)
                wanted = (
                    f"at least {self.teacher.min_tokens} and at most the padded {states.size(1)}"
                )
            if bad:
                name = utt_ids[b] if utt_ids is not None else f"batch item {b}"
                framing = (
                    "[CLS] and [SEP] included" if self.teacher.framed_by_special_tokens
                    else "a decoder-only teacher: no special tokens, BOS dropped"
                )
                caches = os.environ.get(CACHES_IN_USE_ENV, "given as a plm_states data key")
                raise ValueError(
                    f"Utterance {name}: its cached PLM states have {length} vectors but "
                    f"{wanted} ({framing}; PLM {self.teacher.name_or_path!r}, "
                    f"cache {caches}). The cache was made from other transcripts or "
                    f"another PLM: re-dump it with `python -m espnet_gmot.bin.dump_plm_states "
                    f"--text <the data's text> --asr_config <this training config> "
                    f"--output_dir <a new directory>` (it reads the teacher's settings, "
                    f"model_conf.plm_conf, from the config) and train with that cache."
                )

    def collect_feats(self, speech, speech_lengths, text, text_lengths, **kwargs):
        # Stage 10 never needs the PLM; ESPnet's version reads only the speech.
        return super().collect_feats(speech, speech_lengths, text, text_lengths)


def _build_named(cls, conf_name: str, conf: dict, **fixed):
    """Build ``cls(**fixed, **conf)``, naming the yaml key when one is unknown."""
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(conf) - set(params) | (set(conf) & set(fixed)))
    if unknown:
        known = sorted(k for k in params if k != "self" and k not in fixed)
        raise ValueError(f"Unknown key(s) {unknown} in {conf_name}. Known keys: {known}")
    return cls(**fixed, **conf)
