"""ESPnet frontend computing Kaldi-compatible fbank+pitch features on the fly.

Lets raw-waveform recipes (``--feats_type raw``) train on exactly the features
``python -m espnet_gmot.bin.dump_fbank_pitch`` (i.e. Kaldi's
``make_fbank_pitch.sh``) would dump: 80 log-mel filterbank bins followed by
the POV feature, the normalised log pitch and the delta pitch.
"""

from typing import Optional, Tuple, Union

import humanfriendly
import numpy as np
import torch
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from typeguard import typechecked

from espnet_gmot.features.fbank import FbankPitchConfig, compute_fbank_pitch


class FbankPitchFrontend(AbsFrontend):
    """Kaldi fbank (``compute-fbank-feats``) + pitch (``compute-kaldi-pitch-feats``
    and ``process-kaldi-pitch-feats``) frontend.

    ESPnet feeds float waveforms in [-1, 1] (soundfile's scale) while Kaldi
    computes on 16-bit integer sample values, so the input is multiplied by
    ``input_scale`` (32768) first; the log-energies then equal Kaldi's.

    Features are computed per utterance on the CPU (the pitch tracker is a
    sequential Viterbi search) and returned on the input's device; frames
    past an utterance's length are zero, like ESPnet's default frontend.

    Args:
        fs: Sampling rate of the input waveforms.
        num_mel_bins: ``--num-mel-bins`` (80 in ESPnet's ``conf/fbank.conf``).
        frame_length: ``--frame-length`` in ms (fbank and pitch).
        frame_shift: ``--frame-shift`` in ms (fbank and pitch).
        dither: ``--dither`` of the fbank; Kaldi's default is 1.0, the default
            0.0 keeps features deterministic and equal to the dump's.
        delta_pitch_noise_stddev: ``--delta-pitch-noise-stddev`` of
            ``process-kaldi-pitch-feats``.
        srand: ``--srand`` seed of that noise (restarted per utterance); the
            name of Kaldi's option, as everywhere in espnet-gmot.
        input_scale: Factor applied to the waveform before extraction.
    """

    @typechecked
    def __init__(
        self,
        fs: Union[int, str] = 16000,
        num_mel_bins: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        dither: float = 0.0,
        delta_pitch_noise_stddev: float = 0.005,
        srand: Optional[int] = 0,
        input_scale: float = 32768.0,
    ):
        super().__init__()
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        self.fs = int(fs)
        self.input_scale = input_scale
        self.config = FbankPitchConfig(
            num_mel_bins=num_mel_bins,
            frame_length=frame_length,
            frame_shift=frame_shift,
            dither=dither,
            process_options={
                "delta_pitch_noise_stddev": delta_pitch_noise_stddev,
                "srand": srand,
            },
        )

    def output_size(self) -> int:
        return self.config.feature_dim

    def forward(
        self, input: torch.Tensor, input_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Compute features of a padded batch.

        Args:
            input: ``(batch, samples)`` waveforms.
            input_lengths: ``(batch,)`` number of valid samples.

        Returns:
            ``(batch, frames, output_size())`` features and ``(batch,)`` frame
            counts.
        """
        if input.dim() != 2:
            raise ValueError(f"Expected (batch, samples) input, got shape {tuple(input.shape)}")
        waveforms = input.detach().to("cpu", torch.float64).numpy()
        lengths = input_lengths.detach().cpu().tolist()
        features = [
            compute_fbank_pitch(
                waveforms[index, : int(length)],
                self.fs,
                self.config,
                input_scale=self.input_scale,
            )
            for index, length in enumerate(lengths)
        ]
        feats_lengths = torch.tensor([len(f) for f in features], dtype=torch.long)
        max_frames = max([len(f) for f in features] + [0])
        padded = np.zeros((len(features), max_frames, self.output_size()), dtype=np.float32)
        for index, feature in enumerate(features):
            padded[index, : len(feature)] = feature
        feats = torch.from_numpy(padded).to(device=input.device)
        if input.is_floating_point():
            feats = feats.to(input.dtype)
        return feats, feats_lengths.to(input.device)
