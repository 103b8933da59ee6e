#!/usr/bin/env python3
"""Write RESULTS.md: CER per system and set (sclite), parameters, times, figures."""

import argparse
import inspect
import json
import os
import re
from pathlib import Path

import torch
import yaml

from espnet_gmot.transfer.module import OTKnowledgeTransfer

CONF = Path(__file__).resolve().parents[1] / "conf"

DECODERS = {
    "ctc_greedy": "CTC greedy decoding (best path, espnet_gmot.bin.asr_inference_ctc_greedy)",
    "espnet": "CTC decoding by ESPnet's espnet2.bin.asr_inference (prefix search, beam 1, "
              "ctc_weight 1.0)",
}

# Row labels; a system missing here is labelled by its id (conf/train_asr_<id>.yaml).
NAMES = {
    "baseline": "Conformer-CTC (stock ESPnet)",
    "otbert": "OT-BERT",
    "totcakt": "TOT-CAKT",
    "gmot": "GM-OT",
    "gmot_relaxed": "GM-OT with a semi-relaxed frame side",
    "hybrid_baseline": "Conformer + Transformer decoder, hybrid CTC/attention (stock ESPnet)",
    "hybrid_gmot": "GM-OT on the hybrid CTC/attention model",
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


def transfer_setting(config: dict) -> str:
    """The transfer hyper-parameters of a ``model: gmot`` config, defaults filled in
    from the transfer module itself; ``-`` for other models."""
    if config.get("model") != "gmot":
        return "-"
    defaults = {name: parameter.default for name, parameter
                in inspect.signature(OTKnowledgeTransfer.__init__).parameters.items()}
    conf = {**defaults, **(config.get("model_conf") or {}).get("transfer_conf", {})}
    setting = (f"alpha {conf['gw_weight']}, rho {conf['temporal_weight']}, "
               f"eps {conf['epsilon']}, s {conf['fusion_scale']}")
    if conf["marginals"] != "balanced":
        relaxations = [f"{side} {conf[f'{side}_relaxation']}" for side in ("frame", "token")
                       if conf[f"{side}_relaxation"] is not None]
        setting += f", {conf['marginals']} marginals ({', '.join(relaxations)})"
    return setting


def is_hybrid(config: dict) -> bool:
    """Whether a model has an attention decoder (run.sh's is_hybrid)."""
    return config.get("decoder") not in (None, "none")


def decoding_sentence(inference: str, hybrid: bool, ctc_only: bool) -> str:
    """How the table's systems were decoded, from run.sh's options and the decoding config."""
    parts = []
    if ctc_only:
        parts.append(f"CTC-only systems: {DECODERS[inference]} of the average of the best "
                     "checkpoints by validation CER")
    if hybrid:
        decode = yaml.safe_load((CONF / "decode_asr_hybrid.yaml").read_text())
        parts.append("hybrid systems: ESPnet's joint CTC/attention beam search (beam "
                     f"{decode['beam_size']}, CTC weight {decode['ctc_weight']}, "
                     "conf/decode_asr_hybrid.yaml) of the average of the best checkpoints "
                     "by validation attention accuracy")
    return "; ".join(parts) + "."


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
    hybrid = ctc_only = False
    for system in args.systems.split():
        exp = args.exp / f"asr_{system}"
        config = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
        hybrid |= is_hybrid(config)
        ctc_only |= not is_hybrid(config)
        cers = [f"{sclite_error(exp / f'decode_{s}' / 'score_cer' / 'result.txt'):.1f}" for s in sets]
        seconds = (exp / "train_seconds").read_text().strip()
        rows.append(f"| {NAMES.get(system, system)} | " + " | ".join(cers)
                    + f" | {parameters(exp / 'valid.cer_ctc.ave.pth'):,} | {seconds} | "
                    + transfer_setting(config) + " |")

    lines = ["# Results on the generated Mandarin corpus", "",
             "Written by `run.sh` stage 9. CER by sclite (Debian sctk) on characters; "
             + decoding_sentence(args.inference, hybrid, ctc_only)
             + " Parameters are those used at inference (the PLM is not part of the model).",
             "", *rows, ""]
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
