"""ESPnet glue: the CTC ASR model with OT-based PLM knowledge transfer (``model: gmot``)."""

import inspect
import logging
import os
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

from espnet_gmot.espnet.plm_cache import CACHES_IN_USE_ENV
from espnet_gmot.transfer import OTKnowledgeTransfer, PLMTeacher, token_ids_to_text

# Constructor arguments that ESPnet builds from other yaml sections.
_BUILT_BY_ESPNET = (
    "self", "unknown", "vocab_size", "token_list", "frontend", "specaug", "normalize",
    "preencoder", "encoder", "postencoder", "decoder", "ctc", "joint_network",
)


class ESPnetGMOTModel(ESPnetASRModel):
    """Conformer-CTC with OT-BERT / TOT-CAKT / GM-OT knowledge transfer.

    The loss is ``ctc_weight * L_ctc + (1 - ctc_weight) * transfer_weight *
    (L_align + L_fgw)`` (TOT eq. 24, ``lambda`` and ``w``); CTC reads the fused
    features, and :meth:`encode` returns them, so ESPnet's ``Speech2Text``
    decodes this model unchanged and without the PLM.

    PLM states come from the batch when the data has a ``plm_states`` key
    (precomputed with ``python -m espnet_gmot.bin.dump_plm_states``), otherwise
    from the frozen teacher ``plm_conf.name_or_path``, loaded on first use.

    Args (besides ESPnet's):
        ctc_weight: ``lambda``, the CTC share of the total loss. This model is
            CTC-only, so unlike ESPnet's attention models this weighs CTC
            against the transfer losses.
        transfer_weight: ``w``, weight of the transfer losses.
        transfer_conf: arguments of :class:`OTKnowledgeTransfer` (``plm_dim``,
            ``gw_weight``, ``temporal_weight``, ``epsilon``, ``fusion_scale``, ...).
        plm_conf: ``name_or_path`` (default ``bert-base-chinese``) and
            ``local_files_only`` of the teacher.
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
        ctc_weight: float = 0.3,
        transfer_weight: float = 1.0,
        transfer_conf: Optional[dict] = None,
        plm_conf: Optional[dict] = None,
        ignore_id: int = -1,
        lsm_weight: float = 0.0,
        length_normalized_loss: bool = False,
        report_cer: bool = True,
        report_wer: bool = True,
        sym_space: str = "<space>",
        sym_blank: str = "<blank>",
        extract_feats_in_collect_stats: bool = True,
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
        if decoder is not None or joint_network is not None:
            raise ValueError(
                "model: gmot is a CTC-only model (TOT eqs. 23-24): set `decoder: null` "
                "(or remove it) and use ctc_weight as the CTC share of the total loss"
            )
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"model_conf.ctc_weight must lie in [0, 1], got {ctc_weight}")
        super().__init__(
            vocab_size=vocab_size,
            token_list=token_list,
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            postencoder=postencoder,
            decoder=None,
            ctc=ctc,
            joint_network=None,
            ctc_weight=1.0,  # ESPnet's CTC-vs-attention weight: there is no attention
            ignore_id=ignore_id,
            lsm_weight=lsm_weight,
            length_normalized_loss=length_normalized_loss,
            report_cer=report_cer,
            report_wer=report_wer,
            sym_space=sym_space,
            sym_blank=sym_blank,
            extract_feats_in_collect_stats=extract_feats_in_collect_stats,
        )
        self.ctc_weight = ctc_weight
        self.transfer_weight = transfer_weight
        acoustic_dim = (
            postencoder.output_size() if postencoder is not None else encoder.output_size()
        )
        self.transfer = _build_named(
            OTKnowledgeTransfer, "model_conf.transfer_conf", transfer_conf or {},
            acoustic_dim=acoustic_dim,
        )
        self.teacher = _build_named(PLMTeacher, "model_conf.plm_conf", plm_conf or {})
        self._cache_tokenizer_missing = False

    def encode(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder, adapter and fusion: the features CTC decodes (TOT eq. 22)."""
        acoustic, lengths = super().encode(speech, speech_lengths)
        return self.transfer(acoustic), lengths

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """CTC on the fused features plus the transfer losses; stats per step."""
        batch_size = speech.shape[0]
        text = text[:, : text_lengths.max()]
        text = text.masked_fill(text == -1, self.ignore_id)

        acoustic, acoustic_lengths = super().encode(speech, speech_lengths)
        adapted = self.transfer.adapt(acoustic)
        fused = self.transfer.fuse(acoustic, adapted)
        loss_ctc, cer_ctc = self._calc_ctc_loss(fused, acoustic_lengths, text, text_lengths)

        plm_states, plm_lengths, unk_count = self._plm_states(text, text_lengths, kwargs)
        transfer = self.transfer.transfer_losses(
            adapted, acoustic_lengths, plm_states.to(adapted.device), plm_lengths.to(adapted.device)
        )
        loss_transfer = transfer.align + transfer.transport
        loss = self.ctc_weight * loss_ctc + (
            1.0 - self.ctc_weight
        ) * self.transfer_weight * loss_transfer

        stats = dict(
            loss=loss.detach(),
            loss_ctc=loss_ctc.detach(),
            loss_align=transfer.align.detach(),
            loss_fgw=transfer.transport.detach(),
            cer_ctc=cer_ctc,
            **transfer.stats,
        )
        if unk_count is not None:
            stats["plm_unk_rate"] = unk_count.sum().float() / plm_lengths.sum().clamp_min(1)
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
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
        unk = self.teacher.tokenizer.unk_token
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
                bad = not 2 <= length <= states.size(1)
                wanted = f"at least 2 ([CLS], [SEP]) and at most the padded {states.size(1)}"
            if bad:
                name = utt_ids[b] if utt_ids is not None else f"batch item {b}"
                caches = os.environ.get(CACHES_IN_USE_ENV, "given as a plm_states data key")
                raise ValueError(
                    f"Utterance {name}: its cached PLM states have {length} vectors but "
                    f"{wanted} ([CLS] and [SEP] included; PLM {self.teacher.name_or_path!r}, "
                    f"cache {caches}). The cache was made from other transcripts or "
                    f"another PLM: re-dump it with `python -m espnet_gmot.bin.dump_plm_states "
                    f"--text <the data's text> --plm {self.teacher.name_or_path} "
                    f"--output_dir <a new directory>` and train with that cache."
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
