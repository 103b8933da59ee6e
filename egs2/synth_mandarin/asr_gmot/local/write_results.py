#!/usr/bin/env python3
"""Write RESULTS.md: CER per system and set (sclite), over seeds, against the baseline,
at homophone positions; parameters, times, figures.

Every figure comes from run.sh's stage 8 output (sclite's report, with its
per-utterance alignments) and the corpus manifest; nothing is decoded again.
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from espnet_gmot.atomic import atomic_write_text
from espnet_gmot.kaldi_data import read_kaldi_map
from espnet_gmot.transfer.module import TRANSFER_DEFAULTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_common import chars_by_syllable, read_manifest  # noqa: E402
from runs import run_dir  # noqa: E402
from scoring import (  # noqa: E402
    homophone_scores,
    paired_bootstrap,
    read_sclite_alignments,
    sclite_error,
    utterance_errors,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
BOOTSTRAP_SAMPLES = 10000

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
    "gmot_control": "GM-OT with an untrained teacher (control)",
    "gmot_relaxed": "GM-OT with a semi-relaxed frame side",
    "hybrid_baseline": "Conformer + Transformer decoder, hybrid CTC/attention (stock ESPnet)",
    "hybrid_gmot": "GM-OT on the hybrid CTC/attention model",
}


def parameters(model_file: Path) -> int:
    state = torch.load(model_file, map_location="cpu")
    return sum(t.numel() for t in state.values() if torch.is_tensor(t))


def transfer_setting(config: dict) -> str:
    """The transfer hyper-parameters of a ``model: gmot`` config, defaults filled in
    from the transfer module itself; ``-`` for other models."""
    if config.get("model") != "gmot":
        return "-"
    conf = {**TRANSFER_DEFAULTS, **(config.get("model_conf") or {}).get("transfer_conf", {})}
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



def mean_and_deviation(values) -> str:
    """``26.7`` for one seed, ``26.7 ± 1.2`` (sample standard deviation) for several;
    ``-`` where a share is undefined for some seed (no position to count)."""
    if any(math.isnan(v) for v in values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


class SystemRuns:
    """One system's runs (one per seed): configuration, sclite CERs and alignments."""

    def __init__(self, exp: Path, system: str, seeds, tag: str, sets, data: Path):
        self.system = system
        self.dirs = [run_dir(exp, system, seed, tag) for seed in seeds]
        self.config = yaml.safe_load((self.dirs[0] / "config.yaml").read_text(encoding="utf-8"))
        self.alignments = {
            s: [read_sclite_alignments(d / f"decode_{s}" / "score_cer" / "result.txt",
                                       read_kaldi_map(data / s / "utt2spk")) for d in self.dirs]
            for s in sets
        }
        # CER from the alignments (unrounded, for means over seeds), checked against
        # sclite's own summary line.
        self.cer = {}
        for s in sets:
            self.cer[s] = []
            for directory, alignment in zip(self.dirs, self.alignments[s]):
                errors, length = np.sum([utterance_errors(a) for a in alignment.values()], axis=0)
                cer = 100.0 * errors / length
                result = directory / f"decode_{s}" / "score_cer" / "result.txt"
                summary = sclite_error(result)
                if abs(cer - summary) > 0.051:
                    raise ValueError(f"{result}: the alignments give CER {cer:.2f}% but sclite's "
                                     f"summary says {summary}%; re-run stage 8")
                self.cer[s].append(cer)
        self.train_seconds = [int((d / "train_seconds").read_text().strip()) for d in self.dirs]

    def utterance_errors(self, set_name: str, utts):
        """Per utterance: errors averaged over the seeds, and the reference length."""
        counts = np.array([[utterance_errors(a[utt]) for utt in utts]
                           for a in self.alignments[set_name]], dtype=np.float64)
        return counts[:, :, 0].mean(0), counts[0, :, 1]


def comparisons(runs: dict) -> list[tuple[str, str]]:
    """(system, reference) pairs: every other system against the stock baseline of its
    kind (``hybrid_baseline`` for hybrid systems), and ``<x>`` against ``<x>_control``."""
    pairs = []
    for system, run in runs.items():
        reference = "hybrid_baseline" if is_hybrid(run.config) else "baseline"
        if system != reference and reference in runs:
            pairs.append((system, reference))
    pairs += [(system[: -len("_control")], system) for system in runs
              if system.endswith("_control") and system[: -len("_control")] in runs]
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", type=Path, default=Path("exp"))
    parser.add_argument("--systems", default="baseline otbert totcakt gmot")
    parser.add_argument("--seeds", default="0", help="run.sh's --seeds")
    parser.add_argument("--tag", default="", help="run.sh's --tag")
    parser.add_argument("--sets", default="dev test")
    parser.add_argument("--data", type=Path, default=Path("data"), help="Kaldi data dirs (utt2spk)")
    parser.add_argument("--manifest", type=Path, default=Path("downloads/data_aishell/manifest.tsv"),
                        help="the corpus manifest (pinyin of every utterance)")
    parser.add_argument("--output", type=Path, default=Path("RESULTS.md"))
    parser.add_argument("--inference", choices=sorted(DECODERS), default="ctc_greedy")
    parser.add_argument("--couplings", type=Path, default=Path("couplings"))
    args = parser.parse_args()
    sets = args.sets.split()
    seeds = args.seeds.split()
    runs = {system: SystemRuns(args.exp, system, seeds, args.tag, sets, args.data)
            for system in args.systems.split()}
    hybrid = any(is_hybrid(r.config) for r in runs.values())
    ctc_only = not all(is_hybrid(r.config) for r in runs.values())

    over_seeds = (f"mean ± sample standard deviation over {len(seeds)} seeds ({', '.join(seeds)})"
                  if len(seeds) > 1 else f"one seed ({seeds[0]})")
    lines = ["# Results on the generated Mandarin corpus", "",
             "Written by `run.sh` stage 9. CER by sclite (Debian sctk) on characters; "
             + decoding_sentence(args.inference, hybrid, ctc_only)
             + f" CER: {over_seeds}. Parameters are those used at inference (the PLM is not "
             "part of the model); training time is the mean over seeds.", "",
             "| system | " + " | ".join(f"{s} CER (%)" for s in sets)
             + " | parameters | training time (s) | transfer setting |",
             "|---" * (len(sets) + 4) + "|"]
    for system, run in runs.items():
        lines.append(
            f"| {NAMES.get(system, system)} | "
            + " | ".join(mean_and_deviation(run.cer[s]) for s in sets)
            + f" | {parameters(run.dirs[0] / 'valid.cer_ctc.ave.pth'):,}"
            + f" | {round(statistics.mean(run.train_seconds))} | {transfer_setting(run.config)} |")
    lines.append("")

    if len(seeds) > 1:
        lines += ["## CER of every seed (%, dev / test)" if sets == ["dev", "test"]
                  else f"## CER of every seed (%, {' / '.join(sets)})", "",
                  "| system | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
                  "|---" * (len(seeds) + 1) + "|"]
        for system, run in runs.items():
            cells = [" / ".join(f"{run.cer[s][i]:.1f}" for s in sets) for i in range(len(seeds))]
            lines.append(f"| {NAMES.get(system, system)} | " + " | ".join(cells) + " |")
        lines.append("")

    pairs = comparisons(runs)
    if pairs:
        lines += ["## Differences with paired bootstrap intervals", "",
                  "CER difference in points (negative: fewer errors than the reference system), "
                  f"with its 95% interval from {BOOTSTRAP_SAMPLES:,} paired bootstrap resamples of "
                  "the utterances (per-utterance errors averaged over the seeds). An interval "
                  "that holds 0 is no evidence of a difference.", "",
                  "| system | against | " + " | ".join(f"{s} difference (95% interval)" for s in sets)
                  + " |", "|---" * (len(sets) + 2) + "|"]
        for system, reference in pairs:
            cells = []
            for s in sets:
                utts = sorted(runs[reference].alignments[s][0])
                ours, lengths = runs[system].utterance_errors(s, utts)
                theirs, _ = runs[reference].utterance_errors(s, utts)
                delta, low, high = paired_bootstrap(ours, theirs, lengths, BOOTSTRAP_SAMPLES)
                cells.append(f"{delta:+.1f} ({low:+.1f}, {high:+.1f})")
            lines.append(f"| {NAMES.get(system, system)} | {NAMES.get(reference, reference)} | "
                         + " | ".join(cells) + " |")
        lines.append("")

    if args.manifest.exists():
        rows = read_manifest(args.manifest)
        homophones = chars_by_syllable(rows)
        syllables = {row.utt_id: row.pinyin.split() for row in rows}
        lines += ["## Errors at homophone positions", "",
                  "Reference characters whose toned syllable other characters of the corpus "
                  "share: the synthesised audio is the same for all of them, so only linguistic "
                  "context picks the right one. Errors there (substitutions and deletions; "
                  "insertions belong to no reference character), those of them that are another "
                  "character of the same syllable, the wrong-character share where the hypothesis "
                  "has the right syllable (the homophone choice: what only context decides, "
                  "whatever the acoustics got), and errors at the other characters; "
                  f"{over_seeds}; - where a seed has no position to count.", "",
                  "| system | set | homophone positions | CER (%) | errors at homophone positions (%) "
                  "| of which by a homophone (%) | wrong homophone given the right syllable (%) "
                  "| errors at other positions (%) |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in sets:
            for system, run in runs.items():
                scores = [homophone_scores(a, syllables, homophones) for a in run.alignments[s]]
                lines.append(
                    f"| {NAMES.get(system, system)} | {s} | {scores[0].positions} of "
                    f"{scores[0].positions + scores[0].other_positions} | "
                    f"{mean_and_deviation(run.cer[s])} | "
                    f"{mean_and_deviation([x.error_pct for x in scores])} | "
                    f"{mean_and_deviation([x.homophone_substitution_pct for x in scores])} | "
                    f"{mean_and_deviation([x.homophone_choice_error_pct for x in scores])} | "
                    f"{mean_and_deviation([x.other_error_pct for x in scores])} |")
        lines.append("")

    corpus_stats = args.manifest.with_name("corpus_stats.json")
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
                  f"Models of seed {seeds[0]}. Rows: PLM tokens ([CLS] ... [SEP]); columns: "
                  "encoder frames. Each row is scaled to its own maximum.", ""]
        lines += [f"![{p.stem}]({p.as_posix()})" for p in pictures] + [""]
    atomic_write_text(args.output, "\n".join(lines))


if __name__ == "__main__":
    main()
