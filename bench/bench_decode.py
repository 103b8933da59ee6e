#!/usr/bin/env python3
"""Greedy CTC decoding against ESPnet's beam-1 prefix search: time, hypotheses, CER.

On a trained system of the generated-corpus demo (``tools/demo.sh`` first), both
decoders load the same model (``exp/asr_<system>/{config.yaml,
valid.cer_ctc.ave.pth}``) and read the same features (``dump/fbank_pitch/<set>``),
in one process, after a warm-up:

* ESPnet: ``espnet2.bin.asr_inference.Speech2Text`` with the demo's decoding
  config (``beam_size: 1, ctc_weight: 1.0``), one utterance at a time, as
  ``espnet2.bin.asr_inference`` runs it;
* ours: ``espnet_gmot.bin.asr_inference_ctc_greedy.GreedyCTCDecoder``, in
  length-sorted batches of ``--batch_size``, and with ``--batch_size 1``.

It prints the decoding time per utterance and the speed-up (target: >= 20x on
CPU), every utterance whose hypothesis differs with both hypotheses and their
CTC log probabilities, and the CER of each against the reference. Usage::

    python bench/bench_decode.py [--system gmot] [--sets "dev test"] [--batch_size 32]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import editdistance
import kaldiio
import torch

from espnet_gmot.bin.asr_inference_ctc_greedy import GreedyCTCDecoder
from espnet2.bin.asr_inference import Speech2Text

DEMO = Path(__file__).resolve().parents[1] / "egs2" / "synth_mandarin" / "asr_gmot"


def read_text(path: Path):
    result = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition(" ")
        result[key] = text.replace(" ", "")
    return result


def cer(hyps, refs):
    errors = sum(editdistance.eval(hyps[k], refs[k]) for k in refs)
    return 100.0 * errors / sum(len(r) for r in refs.values())


@torch.no_grad()
def ctc_log_probability(model, features, text_ids):
    """log P(text | features) under CTC (sum over alignments), for a difference's report."""
    speech = torch.from_numpy(features.copy())[None]
    encoded, lengths = model.encode(speech, torch.tensor([speech.size(1)]))
    if isinstance(encoded, tuple):
        encoded = encoded[0]
    log_probs = model.ctc.log_softmax(encoded).transpose(0, 1)
    target = torch.tensor([text_ids], dtype=torch.long)
    return -torch.nn.functional.ctc_loss(
        log_probs, target, lengths, torch.tensor([len(text_ids)]), reduction="sum"
    ).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=DEMO)
    parser.add_argument("--system", default="gmot")
    parser.add_argument("--sets", default="dev test")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The trained configs name their statistics relative to the recipe directory.
    os.chdir(args.demo)
    args.demo = Path(".")
    exp = args.demo / "exp" / f"asr_{args.system}"
    config, model_file = exp / "config.yaml", exp / "valid.cer_ctc.ave.pth"
    if not model_file.exists():
        raise SystemExit(f"{model_file} not found: run tools/demo.sh (stages 1-6) first")
    espnet = Speech2Text(str(config), str(model_file), device=args.device, beam_size=1,
                         ctc_weight=1.0, lm_weight=0.0, penalty=0.0, nbest=1)
    greedy = GreedyCTCDecoder(str(config), str(model_file), device=args.device)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, "
          f"system {args.system}, batch {args.batch_size}")

    def synchronize():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for name in args.sets.split():
        feats = dict(kaldiio.load_scp(str(args.demo / "dump" / "fbank_pitch" / name / "feats.scp")))
        refs = read_text(args.demo / "data" / name / "text")
        keys = sorted(feats)
        items = [(k, {"speech": feats[k]}) for k in keys]
        list(greedy(items[:4]))  # warm-up
        # ESPnet's GlobalMVN normalises its input in place: give it copies.
        espnet(torch.from_numpy(feats[keys[0]].copy()))

        espnet_hyps, espnet_ids, espnet_times = {}, {}, []
        for key in keys:
            synchronize()
            start = time.perf_counter()
            text, _, token_int, _ = espnet(torch.from_numpy(feats[key].copy()))[0]
            synchronize()
            espnet_times.append(time.perf_counter() - start)
            espnet_hyps[key], espnet_ids[key] = (text or "").replace(" ", ""), token_int

        ours = {}
        for batch_size in (args.batch_size, 1):
            ordered = sorted(items, key=lambda item: -len(item[1]["speech"]))
            hyps, ids = {}, {}
            synchronize()
            start = time.perf_counter()
            for first in range(0, len(ordered), batch_size):
                for key, text, _, token_ids, _ in greedy(ordered[first : first + batch_size]):
                    hyps[key], ids[key] = (text or "").replace(" ", ""), token_ids
            synchronize()
            ours[batch_size] = (hyps, ids, (time.perf_counter() - start) / len(keys))

        espnet_per_utt = statistics.mean(espnet_times)
        seconds = sum(len(f) for f in feats.values()) / 100
        print(f"\n{name}: {len(keys)} utterances, {seconds:.0f} s of speech, "
              f"{sum(len(r) for r in refs.values())} reference characters")
        print(f"  ESPnet asr_inference (beam 1 prefix search): {espnet_per_utt * 1e3:8.2f} ms "
              f"per utterance, CER {cer(espnet_hyps, refs):.2f}")
        for batch_size, (hyps, ids, per_utt) in ours.items():
            differ = [k for k in keys if hyps[k] != espnet_hyps[k]]
            print(f"  greedy CTC, batch {batch_size:3d}:                   {per_utt * 1e3:8.2f} ms "
                  f"per utterance, CER {cer(hyps, refs):.2f}, speed-up "
                  f"{espnet_per_utt / per_utt:6.1f}x, {len(differ)} hypotheses differ")
            for key in differ:
                ours_lp = ctc_log_probability(greedy.model, feats[key], ids[key])
                espnet_lp = ctc_log_probability(greedy.model, feats[key], espnet_ids[key])
                print(f"    {key}: ESPnet {espnet_hyps[key]} (CTC log P {espnet_lp:.3f}) | "
                      f"greedy {hyps[key]} (CTC log P {ours_lp:.3f}) | ref {refs[key]}")


if __name__ == "__main__":
    main()
