#!/usr/bin/env python3
"""Write RESULTS.md: CER per system and set (sclite), parameters, times, figures."""

import argparse
import json
import os
import re
from pathlib import Path

import torch
import yaml

DECODERS = {
    "ctc_greedy": "CTC greedy decoding (best path, espnet_gmot.bin.asr_inference_ctc_greedy)",
    "espnet": "CTC decoding by ESPnet's espnet2.bin.asr_inference (prefix search, beam 1, "
              "ctc_weight 1.0)",
}

NAMES = {
    "baseline": "Conformer-CTC (stock ESPnet)",
    "otbert": "OT-BERT",
    "totcakt": "TOT-CAKT",
    "gmot": "GM-OT",
}


def sclite_error(result: Path) -> float:
    """The 'Err' percentage of sclite's Sum/Avg line."""
    for line in result.read_text(encoding="utf-8", errors="replace").splitlines():
        if "Sum/Avg" in line:
            fields = [f for f in re.split(r"[|\s]+", line) if f]
            # | Sum/Avg | #Snt #Wrd | Corr Sub Del Ins Err S.Err |
            return float(fields[7])
    raise ValueError(f"{result}: no Sum/Avg line; did sclite run?")


def parameters(model_file: Path) -> int:
    state = torch.load(model_file, map_location="cpu")
    return sum(t.numel() for t in state.values() if torch.is_tensor(t))


def transfer_setting(config_path: Path) -> str:
    config = yaml.safe_load(config_path.read_text())
    if config.get("model") != "gmot":
        return "-"
    conf = config["model_conf"].get("transfer_conf", {})
    return (f"alpha {conf.get('gw_weight', 0.02)}, rho {conf.get('temporal_weight', 0.5)}, "
            f"eps {conf.get('epsilon', 0.1)}, s {conf.get('fusion_scale', 1.0)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", type=Path, default=Path("exp"))
    parser.add_argument("--systems", default="baseline otbert totcakt gmot")
    parser.add_argument("--sets", default="dev test")
    parser.add_argument("--output", type=Path, default=Path("RESULTS.md"))
    parser.add_argument("--inference", choices=sorted(DECODERS), default="ctc_greedy")
    parser.add_argument("--couplings", type=Path, default=Path("couplings"))
    args = parser.parse_args()
    sets = args.sets.split()

    rows = ["| system | " + " | ".join(f"{s} CER (%)" for s in sets)
            + " | parameters | training time (s) | transfer setting |",
            "|---" * (len(sets) + 4) + "|"]
    for system in args.systems.split():
        exp = args.exp / f"asr_{system}"
        cers = [f"{sclite_error(exp / f'decode_{s}' / 'score_cer' / 'result.txt'):.1f}" for s in sets]
        seconds = (exp / "train_seconds").read_text().strip()
        rows.append(f"| {NAMES.get(system, system)} | " + " | ".join(cers)
                    + f" | {parameters(exp / 'valid.cer_ctc.ave.pth'):,} | {seconds} | "
                    + transfer_setting(exp / "config.yaml") + " |")

    lines = ["# Results on the generated Mandarin corpus", "",
             "Written by `run.sh` stage 9. CER by sclite (Debian sctk) on characters; "
             f"{DECODERS[args.inference]} of the "
             "average of the best checkpoints by validation CER. Parameters are those "
             "used at inference (the PLM is not part of the model).", "", *rows, ""]
    corpus_stats = Path("downloads/data_aishell/corpus_stats.json")
    if corpus_stats.exists():
        stats = json.loads(corpus_stats.read_text())
        lines += ["## Corpus", "", "```", json.dumps(
            {k: stats[k] for k in stats if k not in ("generation_config", "espeak_ng_version")},
            indent=1, ensure_ascii=False)[:3000], "```", ""]
    mlm = args.exp / "teacher_plm" / "mlm_eval.json"
    if mlm.exists():
        lines += ["## Teacher PLM (masked-LM pretraining)", "", "```",
                  json.dumps(json.loads(mlm.read_text()), indent=1, ensure_ascii=False),
                  "```", ""]
    times = args.exp / "stage_times.tsv"
    if times.exists():
        last = {}
        for line in times.read_text().splitlines():
            number, name, seconds = line.split("\t")
            last[(int(number), name)] = seconds
        lines += ["## Stage times (last run of each stage, seconds)", "",
                  "| stage | seconds |", "|---|---|"]
        lines += [f"| {n} {name} | {s} |" for (n, name), s in sorted(last.items())] + [""]
    pictures = sorted(args.couplings.glob("*.png"))
    if pictures:
        lines += ["## Couplings of test utterances", "",
                  "Rows: PLM tokens ([CLS] ... [SEP]); columns: encoder frames. Each row is "
                  "scaled to its own maximum.", ""]
        lines += [f"![{p.stem}]({p.as_posix()})" for p in pictures] + [""]
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, args.output)


if __name__ == "__main__":
    main()
