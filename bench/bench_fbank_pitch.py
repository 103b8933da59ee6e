#!/usr/bin/env python3
"""Single-core speed of Kaldi-compatible fbank+pitch extraction.

Prints seconds of audio processed per second of compute (x real time) for
the fbank (kaldi-native-fbank), the pitch tracker + post-processing, and the
full 83-dim features, on one thread.  Target: >= 100x real time.

    python bench/bench_fbank_pitch.py [--seconds 60] [--repeats 3]
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"  # must precede numpy/torch imports

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402

from espnet_gmot.features import (  # noqa: E402
    FbankPitchConfig,
    compute_fbank_pitch,
    compute_kaldi_fbank,
    compute_kaldi_pitch,
    process_kaldi_pitch,
)

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "features" / "fixtures"


def test_audio(seconds: float) -> np.ndarray:
    """Speech-like audio: the Mandarin fixtures tiled, with a little noise."""
    clips = [
        soundfile.read(FIXTURES / f"mandarin{i}.wav", dtype="int16")[0].astype(np.float64)
        for i in (1, 2, 3)
    ]
    clip = np.concatenate(clips)
    audio = np.tile(clip, int(np.ceil(seconds * 16000 / len(clip))))[: int(seconds * 16000)]
    return audio + np.random.default_rng(0).normal(0, 3, len(audio))


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length")
    parser.add_argument("--utterance", type=float, default=6.0, help="utterance length (s)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    audio = test_audio(args.seconds)
    step = int(args.utterance * 16000)
    utterances = [audio[i : i + step] for i in range(0, len(audio), step)]
    config = FbankPitchConfig()
    duration = len(audio) / 16000

    stages = {
        "fbank (kaldi-native-fbank)": lambda u: compute_kaldi_fbank(u, 16000, config),
        "pitch + post-processing": lambda u: process_kaldi_pitch(compute_kaldi_pitch(u, 16000)),
        "fbank+pitch (83-dim)": lambda u: compute_fbank_pitch(u, 16000, config),
    }
    compute_fbank_pitch(utterances[0], 16000, config)  # warm caches
    print(f"{duration:.0f} s of audio in {len(utterances)} utterances, 1 thread")
    for name, stage in stages.items():
        seconds = best_time(lambda: [stage(u) for u in utterances], args.repeats)
        print(f"{name:28s} {seconds:7.3f} s  {duration / seconds:7.1f}x real time")


if __name__ == "__main__":
    main()
