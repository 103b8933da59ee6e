#!/usr/bin/env python3
"""Greedy CTC decoding against ESPnet's beam-1 prefix search: time, hypotheses, CER.

Both decoders load the same model and read the same features, in one process,
after a warm-up:

* ESPnet: ``espnet2.bin.asr_inference.Speech2Text`` with the greedy decoding
  config (``beam_size: 1, ctc_weight: 1.0``), one utterance at a time, as
  ``espnet2.bin.asr_inference`` runs it; its encoder alone (``asr_model.encode``,
  one utterance at a time) is timed too: the part of ESPnet's time that greedy
  decoding also spends at batch 1;
* ours: ``espnet_gmot.bin.asr_inference_ctc_greedy.GreedyCTCDecoder`` at each
  of ``--batch_sizes``, length-sorted batches.

It prints the decoding time per utterance and the speed-up over ESPnet (target:
>= 20x on CPU), how many hypotheses differ from ESPnet's and from our
one-utterance decoding (batches are exact: none should), every difference to
ESPnet with both hypotheses' CTC log probabilities, and CERs.

Models:

* ``--model demo`` (default): a trained system of the generated-corpus demo
  (``tools/demo.sh`` first; ``--demo`` names another copy of the recipe
  directory), ``exp/asr_<system>_seed<seed>/{config.yaml,valid.cer_ctc.ave.pth}`` on
  ``dump/fbank_pitch/<set>``;
* ``--model aishell_random``: a randomly initialised CTC model with the
  encoder of ``egs2/aishell/asr_gmot/conf/train_asr_gmot.yaml`` (Conformer, 16
  blocks of 256), AISHELL-1's 4233 tokens and ``--utterances`` random 80-dim
  feature sequences of 4-6 s: the cost at the scale users decode (its
  hypotheses are random tokens, so only the times and the agreement count).

``--profile N`` prints cProfile's top functions of ESPnet decoding N utterances.
Usage::

    python bench/bench_decode.py [--model demo] [--system gmot] [--seed 0] [--sets "dev test"]
        [--batch_sizes "1 16 32 64"] [--threads 2] [--profile 10]
"""

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import editdistance
import numpy as np
import torch
import yaml

from espnet_gmot import kaldi_data
from espnet_gmot.bin.asr_inference_ctc_greedy import GreedyCTCDecoder
from espnet2.bin.asr_inference import Speech2Text

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "egs2" / "synth_mandarin" / "asr_gmot"
AISHELL_CONFIG = ROOT / "egs2" / "aishell" / "asr_gmot" / "conf" / "train_asr_gmot.yaml"
AISHELL_VOCAB = 4233


def read_text(path: Path):
    return {key: text.replace(" ", "") for key, text in kaldi_data.read_text(path).items()}


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


def demo_model(args):
    """The demo system's files and its sets' features and references."""
    import kaldiio

    # The trained configs name their statistics relative to the recipe directory.
    os.chdir(args.demo)
    exp = Path("exp") / f"asr_{args.system}_seed{args.seed}"  # run.sh's run_dir
    config, model_file = exp / "config.yaml", exp / "valid.cer_ctc.ave.pth"
    if not model_file.exists():
        raise SystemExit(f"{args.demo / model_file} not found: run tools/demo.sh "
                         "(stages 1-6) first, or give --demo a recipe directory that has it")
    sets = {}
    for name in args.sets.split():
        feats = dict(kaldiio.load_scp(str(Path("dump") / "fbank_pitch" / name / "feats.scp")))
        sets[name] = (feats, read_text(Path("data") / name / "text"))
    return config, model_file, sets, f"demo system {args.system} (seed {args.seed})"


def aishell_random_model(args, workdir: Path):
    """A random CTC model of the AISHELL recipe's encoder and vocabulary, saved as
    ESPnet saves a trained one, and random 4-6 s feature sequences."""
    from espnet2.tasks.asr import ASRTask

    conf = yaml.safe_load(AISHELL_CONFIG.read_text())
    config = dict(encoder=conf["encoder"], encoder_conf=conf["encoder_conf"],
                  model="espnet", model_conf=dict(ctc_weight=1.0), input_size=80,
                  token_type="char",
                  token_list=["<blank>", "<unk>"]
                  + [chr(0x4E00 + k) for k in range(AISHELL_VOCAB - 3)] + ["<sos/eos>"])
    conf_path = workdir / "train.yaml"
    conf_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    train_args = ASRTask.get_parser().parse_args(
        ["--config", str(conf_path), "--output_dir", str(workdir / "out")])
    torch.manual_seed(0)
    model = ASRTask.build_model(train_args)
    config_path, model_file = workdir / "config.yaml", workdir / "model.pth"
    with config_path.open("w", encoding="utf-8") as f:
        yaml.safe_dump(vars(train_args), f, allow_unicode=True)
    torch.save(model.state_dict(), model_file)
    rng = np.random.default_rng(0)
    feats = {f"random{k:03d}": rng.standard_normal((int(rng.integers(400, 601)), 80))
             .astype(np.float32) for k in range(args.utterances)}
    encoder_conf = conf["encoder_conf"]
    label = (f"random-initialised {conf['encoder']} ({encoder_conf['num_blocks']} blocks of "
             f"{encoder_conf['output_size']}), {AISHELL_VOCAB} tokens, "
             f"{args.utterances} random 4-6 s utterances of 80-dim features")
    return config_path, model_file, {"random": (feats, None)}, label


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("demo", "aishell_random"), default="demo")
    parser.add_argument("--demo", type=Path, default=DEMO)
    parser.add_argument("--system", default="gmot")
    parser.add_argument("--seed", type=int, default=0, help="the run of the demo's --seeds to decode")
    parser.add_argument("--sets", default="dev test")
    parser.add_argument("--utterances", type=int, default=20,
                        help="utterances of --model aishell_random")
    parser.add_argument("--batch_sizes", default="1 16 32 64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", type=int, default=0,
                        help="cProfile ESPnet decoding this many utterances")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split()]
    workdir = tempfile.TemporaryDirectory()
    if args.model == "demo":
        config, model_file, sets, label = demo_model(args)
    else:
        config, model_file, sets, label = aishell_random_model(args, Path(workdir.name))
    espnet = Speech2Text(str(config), str(model_file), device=args.device, beam_size=1,
                         ctc_weight=1.0, lm_weight=0.0, penalty=0.0, nbest=1)
    greedy = GreedyCTCDecoder(str(config), str(model_file), device=args.device)
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, {label}; "
          f"batches exact: {greedy.exact_batches}")

    def synchronize():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def espnet_decode(features):
        # ESPnet's GlobalMVN normalises its input in place: give it copies.
        text, _, token_int, _ = espnet(torch.from_numpy(features.copy()))[0]
        return (text or "").replace(" ", ""), token_int

    @torch.no_grad()
    def espnet_encode(features):
        speech = torch.from_numpy(features.copy())[None].to(args.device)
        espnet.asr_model.encode(speech, torch.tensor([speech.size(1)]))

    for name, (feats, refs) in sets.items():
        keys = sorted(feats)
        items = [(k, {"speech": feats[k]}) for k in keys]
        list(greedy(items[:4]))  # warm-up
        espnet_decode(feats[keys[0]])

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for key in keys[: args.profile]:
                espnet_decode(feats[key])
            profiler.disable()
            print(f"\n{name}: cProfile of ESPnet beam-1 decoding {args.profile} utterances")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(14)

        espnet_hyps, espnet_ids, espnet_times, encoder_times = {}, {}, [], []
        for key in keys:
            synchronize()
            start = time.perf_counter()
            espnet_hyps[key], espnet_ids[key] = espnet_decode(feats[key])
            synchronize()
            middle = time.perf_counter()
            espnet_encode(feats[key])
            synchronize()
            espnet_times.append(middle - start)
            encoder_times.append(time.perf_counter() - middle)

        ours = {}
        ordered = sorted(items, key=lambda item: -len(item[1]["speech"]))
        for batch_size in batch_sizes:
            hyps, ids = {}, {}
            synchronize()
            start = time.perf_counter()
            for first in range(0, len(ordered), batch_size):
                for key, text, _, token_ids, _ in greedy(ordered[first : first + batch_size]):
                    hyps[key], ids[key] = (text or "").replace(" ", ""), token_ids
            synchronize()
            ours[batch_size] = (hyps, ids, (time.perf_counter() - start) / len(keys))

        espnet_per_utt = statistics.mean(espnet_times)
        encoder_per_utt = statistics.mean(encoder_times)
        seconds = sum(len(f) for f in feats.values()) / 100
        refs_text = (f", {sum(len(r) for r in refs.values())} reference characters"
                     if refs else "")
        print(f"\n{name}: {len(keys)} utterances, {seconds:.0f} s of speech{refs_text}")

        def cer_text(hyps, refs=refs):
            return f", CER {cer(hyps, refs):6.2f}" if refs else ""

        print(f"  ESPnet asr_inference (beam 1 prefix search): {espnet_per_utt * 1e3:9.2f} ms "
              f"per utterance{cer_text(espnet_hyps)}")
        print(f"    of which its encoder, one utterance:       {encoder_per_utt * 1e3:9.2f} ms "
              f"({100 * encoder_per_utt / espnet_per_utt:.0f}%; the search: "
              f"{(espnet_per_utt - encoder_per_utt) * 1e3:.2f} ms)")
        # The search runs one step per output token and one for <eos>.
        steps = sum(len(espnet_ids[k]) + 1 for k in keys) / len(keys)
        search_per_step = (espnet_per_utt - encoder_per_utt) / steps
        print(f"    search: {steps:.1f} steps per utterance (tokens + <eos>), "
              f"{search_per_step * 1e3:.2f} ms per step ({len(greedy.model.token_list)} tokens "
              "scored per step)")
        alone = ours.get(1)
        for batch_size, (hyps, ids, per_utt) in ours.items():
            differ = [k for k in keys if hyps[k] != espnet_hyps[k]]
            vs_alone = ("" if alone is None or batch_size == 1 else
                        f", {sum(ids[k] != alone[1][k] for k in keys)} differ from batch 1")
            print(f"  greedy CTC, batch {batch_size:3d}:                   {per_utt * 1e3:9.2f} ms "
                  f"per utterance{cer_text(hyps)}, speed-up {espnet_per_utt / per_utt:6.1f}x, "
                  f"{len(differ)} hypotheses differ from ESPnet{vs_alone}")
            if refs is None:
                continue
            for key in differ:
                ours_lp = ctc_log_probability(greedy.model, feats[key], ids[key])
                espnet_lp = ctc_log_probability(greedy.model, feats[key], espnet_ids[key])
                print(f"    {key}: ESPnet {espnet_hyps[key]} (CTC log P {espnet_lp:.3f}) | "
                      f"greedy {hyps[key]} (CTC log P {ours_lp:.3f}) | ref {refs[key]}")
        print(f"  Amdahl bound at batch 1 (ESPnet / its encoder): "
              f"{espnet_per_utt / encoder_per_utt:.1f}x")
    workdir.cleanup()


if __name__ == "__main__":
    main()
