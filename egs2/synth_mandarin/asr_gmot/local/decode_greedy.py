#!/usr/bin/env python3
"""Stage 7 with ``--inference ctc_greedy``: every run and set in one process.

Each decoding is ``espnet_gmot.bin.asr_inference_ctc_greedy`` with the arguments
a per-job command would get; one process pays ESPnet's start-up (which takes
far longer than decoding these sets) once instead of once per run and set.
Writes ``<run dir>/decode_<set>/{text,output/1best_recog/*}`` atomically,
like run.sh's ``decode_one``; finished decodings are kept.
"""

import argparse
import shutil
from pathlib import Path

from espnet_gmot.bin.asr_inference_ctc_greedy import DEFAULT_BATCH_SIZE, get_parser, inference


def decode(run_dir: Path, name: str, args) -> None:
    out = run_dir / f"decode_{name}"
    if (out / "text").exists():
        print(f"{out} exists, kept", flush=True)
        return
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model_dir = out.parent
    inference(get_parser().parse_args([
        "--ngpu", "0", "--batch_size", str(args.batch_size),
        "--data_path_and_name_and_type", f"{args.feats}/{name}/feats.scp,speech,kaldi_ark",
        "--asr_train_config", str(model_dir / "config.yaml"),
        "--asr_model_file", str(model_dir / args.model_file),
        "--config", args.config,
        "--output_dir", str(staging / "output"),
    ]))
    hyps = (staging / "output" / "1best_recog" / "text").read_text(encoding="utf-8")
    (staging / "text").write_text("".join(sorted(hyps.splitlines(keepends=True))), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"decoded {name} with {run_dir}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True,
                        help="exp dirs of trained models, e.g. 'exp/asr_baseline_seed0 exp/asr_gmot_seed0'")
    parser.add_argument("--sets", required=True, help="e.g. 'dev test'")
    parser.add_argument("--feats", default="dump/fbank_pitch")
    parser.add_argument("--model_file", default="valid.cer_ctc.ave.pth")
    parser.add_argument("--config", default="conf/decode_asr_ctc_greedy.yaml")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="utterances per batch; every one decodes as it does alone")
    args = parser.parse_args()
    for run_dir in args.runs.split():
        for name in args.sets.split():
            decode(Path(run_dir), name, args)


if __name__ == "__main__":
    main()
