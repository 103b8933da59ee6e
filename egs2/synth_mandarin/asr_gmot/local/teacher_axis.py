#!/usr/bin/env python3
"""Teacher-strength axis: is the transfer linguistic?

The corpus speaks every character by its toned syllable, so homophones are
byte-identical audio and only linguistic context can pick the right one. If the
transfer carries the teacher's knowledge of Chinese, the share of wrong
homophones where the hypothesis has the right syllable should fall as the
teacher gets better at masked LM; if the gain is the transfer branch's alone,
an untrained teacher does as well. This script trains the same teacher
architecture at several pretraining budgets, trains each transfer system with
each teacher over seeds, and relates CER and the homophone choice to the
teacher's held-out MLM accuracy.

Run it from the recipe directory once run.sh's stages 1-5 exist::

    bash run.sh --stop_stage 5
    python3 local/teacher_axis.py                                     # GM-OT, 4 teachers, 3 seeds
    python3 local/teacher_axis.py --systems "gmot otbert"             # and OT-BERT
    python3 local/teacher_axis.py --steps "0 1600" --seeds 0          # a quick look
    python3 local/teacher_axis.py --report_only                       # tables and plot only

Teachers (``--steps``, optimizer steps of ``local/train_teacher_plm.py``, each
reproducible): 0 is the untrained control of stage 2 (``exp/teacher_plm_control``,
its MLM head untrained too); the budget of stage 2's teacher is ``exp/teacher_plm``
itself; every other budget is trained into ``exp/teacher_plm_steps<N>`` with stage
2's settings (read from its ``.teacher_done.json``), only ``--max_steps`` changed.

Runs: a system (``conf/train_asr_<system>.yaml``) with stage 2's teacher is the
untagged run of the demo, ``exp/asr_<system>_seed<seed>``; with the untrained
teacher it is ``<system>_control``'s untagged run where that config exists
(GM-OT's control); otherwise it is one call of ``run.sh --stage 6 --stop_stage 8
--systems <system> --seeds <seeds> --tag plm_steps-<N> --train_args "--model_conf
plm_conf.name_or_path=<teacher>"``. The stock baseline's untagged runs are the
reference. Nothing is trained twice: run.sh keeps finished runs, so an
interrupted axis resumes where it stopped.

Writes ``<out_dir>/RESULTS.md`` (default ``teacher_axis/``) and
``<out_dir>/teacher_strength.png``, and puts the same section into the recipe's
RESULTS.md (``## Teacher strength``, replaced on every report; stage 9 writes
RESULTS.md anew, so report again after it).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_teacher_plm  # noqa: E402
from corpus_common import chars_by_syllable, read_manifest  # noqa: E402
from runs import embed_section, run_dir  # noqa: E402
from scoring import (  # noqa: E402
    HomophoneScore,
    paired_bootstrap,
    paired_bootstrap_ratio,
    utterance_homophone_scores,
)
from sweep import SweepError, check_prerequisites, passthrough_options  # noqa: E402
from write_results import BOOTSTRAP_SAMPLES, NAMES, SystemRuns, mean_and_deviation  # noqa: E402

from espnet_gmot.atomic import atomic_write, atomic_write_text  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1]
TEACHER = "exp/teacher_plm"                  # stage 2's teacher, as the configs name it
CONTROL_TEACHER = "exp/teacher_plm_control"  # its untrained copy
MANIFEST = "downloads/data_aishell/manifest.tsv"
DEFAULT_STEPS = "0 400 1600 6400"
SECTION = "## Teacher strength"
PLOT = "teacher_strength.png"


class AxisError(Exception):
    """A problem with the options, the teachers or the exp dir, worded for the user."""


# --------------------------------------------------------------------------
# Teachers and runs
# --------------------------------------------------------------------------


def teacher_path(steps: int, stage2_steps: int) -> str:
    """The teacher of a budget, relative to the recipe (as ``plm_conf.name_or_path``)."""
    if steps == 0:
        return CONTROL_TEACHER
    if steps == stage2_steps:
        return TEACHER
    return f"{TEACHER}_steps{steps}"


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AxisError(f"{path} is missing ({what}): run run.sh --stop_stage 5 first") from None
    except json.JSONDecodeError as error:
        raise AxisError(f"{path} is not valid JSON ({error}); remove {path.parent} and run "
                        "run.sh --stage 2 --stop_stage 2 again") from None


def stage2_config(recipe: Path) -> dict:
    """The run configuration of stage 2's teacher; it must be bounded by steps."""
    config = read_json(recipe / TEACHER / train_teacher_plm.DONE_MARKER, "stage 2's teacher")
    if config.get("max_minutes", 0) > 0 or config.get("max_steps", 0) <= 0:
        raise AxisError(f"{recipe / TEACHER} was trained to a wall-clock budget (--plm_minutes "
                        f"{config.get('max_minutes')}): the axis compares teachers by steps; run "
                        "run.sh --stage 2 --stop_stage 2 --plm_minutes 0 first")
    return config


def teacher_command(config: Mapping, steps: int, python: str, out_dir: str,
                    control_dir: str | None = None) -> list[str]:
    """``local/train_teacher_plm.py`` with stage 2's settings (``config``, its marker)
    and ``steps`` optimizer steps; ``control_dir`` adds the untrained control."""
    defaults = vars(train_teacher_plm.build_arg_parser().parse_args(["--out_dir", out_dir]))
    command = [python, "local/train_teacher_plm.py", "--out_dir", out_dir,
               "--corpus_manifest", MANIFEST]
    for key in sorted(defaults):
        if key in config and key not in ("max_steps", "out_dir"):
            command += [f"--{key}", str(config[key])]
    command += ["--max_steps", str(steps)]
    if control_dir is not None:
        command += ["--control_dir", control_dir]
    return command


def check_teacher(recipe: Path, steps: int, stage2: Mapping) -> None:
    """A trained axis teacher must be stage 2's but for its steps (same text, model,
    seed and threads)."""
    path = recipe / teacher_path(steps, int(stage2["max_steps"]))
    config = read_json(path / train_teacher_plm.DONE_MARKER, f"the teacher of {steps} steps")
    differing = sorted(key for key in {*config, *stage2} - {"max_steps"}
                       if config.get(key) != stage2.get(key))
    if differing or config.get("max_steps") != steps:
        raise AxisError(f"{path} is not stage 2's teacher with {steps} steps (it differs in "
                        f"{', '.join(differing) or 'max_steps'}); remove {path} and run the axis "
                        "again to retrain it")


@dataclass(frozen=True)
class AxisRun:
    """Where the runs of one system with one teacher live."""

    system: str        # conf/train_asr_<system>.yaml, as run.sh's --systems
    tag: str           # run.sh's --tag ("" for the demo's own runs)
    teacher: str       # plm_conf.name_or_path

    @property
    def train_args(self) -> str:
        return f"--model_conf plm_conf.name_or_path={self.teacher}" if self.tag else ""

    def command(self, seeds: Sequence[str], passthrough: Sequence[str] = ()) -> list[str]:
        command = ["bash", "run.sh", "--stage", "6", "--stop_stage", "8", "--systems", self.system,
                   "--seeds", " ".join(seeds)]
        if self.tag:
            command += ["--tag", self.tag, "--train_args", self.train_args]
        return command + list(passthrough)


BASELINE = AxisRun("baseline", "", "")  # the stock baseline's untagged runs, the reference


def config_path(recipe: Path, system: str) -> Path:
    return recipe / "conf" / f"train_asr_{system}.yaml"


def configured_teacher(config: Mapping, source: str) -> str:
    """``model_conf.plm_conf.name_or_path`` of a ``model: gmot`` config."""
    if config.get("model") != "gmot":
        raise AxisError(f"{source} has model: {config.get('model')}, not gmot: the axis varies the "
                        "teacher of a transfer system (e.g. --systems \"gmot otbert\")")
    try:
        return str(config["model_conf"]["plm_conf"]["name_or_path"])
    except (KeyError, TypeError):
        raise AxisError(f"{source} has no model_conf.plm_conf.name_or_path") from None


def axis_run(recipe: Path, system: str, steps: int, stage2_steps: int) -> AxisRun:
    teacher = teacher_path(steps, stage2_steps)
    candidates = [system] if steps == stage2_steps else []
    if steps == 0:
        candidates.append(f"{system}_control")
    for candidate in candidates:
        source = config_path(recipe, candidate)
        if source.exists():
            config = yaml.safe_load(source.read_text(encoding="utf-8"))
            if configured_teacher(config, str(source)) == teacher:
                return AxisRun(candidate, "", teacher)
    return AxisRun(system, f"plm_steps-{steps}", teacher)


def check_run(directory: Path, run: AxisRun, max_epoch) -> None:
    """A finished run must have read the teacher it is taken for, for the axis's epochs."""
    config_file = directory / "config.yaml"
    if not config_file.exists():
        raise AxisError(f"{directory} is marked trained but has no config.yaml; remove it and run "
                        "the axis again")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    if config.get("model") == "gmot" and configured_teacher(config, str(config_file)) != run.teacher:
        raise AxisError(f"{config_file} read the teacher {configured_teacher(config, str(config_file))}"
                        f", but the axis takes this run for {run.teacher}; move {directory} aside "
                        "and run the axis again to retrain it")
    if max_epoch is not None and config.get("max_epoch") != max_epoch:
        raise AxisError(f"{directory} was trained for max_epoch {config.get('max_epoch')} but the "
                        f"axis trains for {max_epoch}: give --max_epoch {config.get('max_epoch')}, "
                        f"or move {directory} aside to retrain it")


# --------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------


@dataclass
class Interval:
    difference: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.difference:+.1f} ({self.low:+.1f}, {self.high:+.1f})"


@dataclass
class HomophoneCounts:
    """Per utterance, averaged over seeds: wrong homophones, and homophone positions
    with the right syllable (the share's denominator, which depends on the hypothesis)."""

    utts: list[str]
    wrong_homophone: np.ndarray
    right_syllable: np.ndarray


class Scored:
    """One system's runs over seeds: CER and the homophone choice, per seed and per
    utterance."""

    def __init__(self, runs: SystemRuns, sets: Sequence[str], syllables, homophones):
        self.runs = runs
        self.cer = runs.cer                                   # set -> per seed, %
        self.share: dict[str, list[float]] = {}               # set -> per seed, %
        self.position_errors: dict[str, list[float]] = {}     # set -> per seed, %
        self.counts: dict[str, HomophoneCounts] = {}
        # (metric, other, set) -> interval: the table and the reading ask for the same ones
        self._intervals: dict[tuple, Interval | None] = {}
        for s in sets:
            per_seed = [utterance_homophone_scores(a, syllables, homophones)
                        for a in runs.alignments[s]]
            totals = [sum(scores.values(), HomophoneScore(0, 0, 0, 0, 0)) for scores in per_seed]
            self.share[s] = [t.homophone_choice_error_pct for t in totals]
            self.position_errors[s] = [t.error_pct for t in totals]
            utts = sorted(per_seed[0])
            self.counts[s] = HomophoneCounts(
                utts,
                np.mean([[x[u].homophone_substitutions for u in utts] for x in per_seed], axis=0),
                np.mean([[x[u].right_syllable for u in utts] for x in per_seed], axis=0))

    def cer_against(self, other: "Scored", set_name: str) -> Interval:
        key = ("cer", id(other), set_name)
        if key not in self._intervals:
            self._intervals[key] = self._cer_against(other, set_name)
        return self._intervals[key]

    def share_against(self, other: "Scored", set_name: str) -> Interval | None:
        """None where either system never has the right syllable at a homophone
        position (no share to compare)."""
        key = ("share", id(other), set_name)
        if key not in self._intervals:
            self._intervals[key] = self._share_against(other, set_name)
        return self._intervals[key]

    def _cer_against(self, other: "Scored", set_name: str) -> Interval:
        utts = self.counts[set_name].utts
        ours, lengths = self.runs.utterance_errors(set_name, utts)
        theirs, _ = other.runs.utterance_errors(set_name, utts)
        return Interval(*paired_bootstrap(ours, theirs, lengths, BOOTSTRAP_SAMPLES))

    def _share_against(self, other: "Scored", set_name: str) -> Interval | None:
        ours, theirs = self.counts[set_name], other.counts[set_name]
        if ours.utts != theirs.utts:
            raise AxisError(f"{set_name}: the runs decoded different utterances; rerun stages 7-8")
        if not (ours.right_syllable.sum() and theirs.right_syllable.sum()):
            return None
        return Interval(*paired_bootstrap_ratio(ours.wrong_homophone, ours.right_syllable,
                                                theirs.wrong_homophone, theirs.right_syllable,
                                                BOOTSTRAP_SAMPLES))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample deviation over seeds (0 for one seed); NaN where a seed has
    no value (a share without a position to count)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_interval(interval: Interval | None) -> str:
    return "-" if interval is None else str(interval)


def mlm_accuracy(recipe: Path, teacher: str) -> dict:
    """``{"heldout": ..., "corpus": ..., "minutes": ...}`` from a teacher's mlm_eval.json."""
    evaluation = read_json(recipe / teacher / "mlm_eval.json", f"the evaluation of {teacher}")
    corpus = evaluation.get("corpus_dev_test_sentences") or {}
    return {"heldout": evaluation["heldout_people_daily"]["accuracy"],
            "corpus": corpus.get("accuracy", float("nan")),
            "minutes": evaluation.get("train_minutes", 0.0)}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


@dataclass
class Level:
    steps: int
    teacher: str
    accuracy: dict
    scored: dict            # system -> Scored
    runs: dict              # system -> AxisRun


def below_zero(interval: Interval | None) -> bool:
    return interval is not None and interval.high < 0


def at_steps(levels: Sequence[Level]) -> str:
    return ", ".join(f"{lv.steps} steps (MLM {lv.accuracy['heldout']:.3f})" for lv in levels) \
        or "none of the trained teachers"


def reading_lines(levels: Sequence[Level], systems, sets) -> list[str]:
    """What the intervals against the untrained teacher say, in words computed from them."""
    untrained = levels[0]
    lines = []
    for system in systems:
        reference = untrained.scored[system]
        for s in sets:
            share = [lv for lv in levels[1:]
                     if below_zero(lv.scored[system].share_against(reference, s))]
            cer = [lv for lv in levels[1:] if below_zero(lv.scored[system].cer_against(reference, s))]
            lines.append(f"- {NAMES.get(system, system)}, {s}: wrong-homophone share below the "
                         f"untrained teacher's (95% interval under 0) with {at_steps(share)}; CER "
                         f"below the untrained teacher's with {at_steps(cer)}.")
    return lines


def section_markdown(levels: Sequence[Level], baseline: Scored, systems: Sequence[str],
                     seeds: Mapping[str, Sequence[str]], sets: Sequence[str], max_epoch) -> str:
    """The axis section, headed ``## Teacher strength`` (lower headings inside)."""
    epochs = max_epoch if max_epoch is not None else "the configs'"
    seed_text = "; ".join(f"{NAMES.get(s, s)} seeds {', '.join(seeds[s])}"
                          for s in ("baseline", *systems))
    lines = [
        SECTION, "",
        "Written by `local/teacher_axis.py`. The same teacher architecture (stage 2's) at "
        "several pretraining budgets, counted in optimizer steps (0: the untrained control); "
        "each transfer system trained with each teacher, "
        f"{epochs} epochs; {seed_text}. MLM accuracy: masked-character accuracy of each teacher "
        "on 2,000 held-out People's Daily clauses and on the corpus's dev/test sentences "
        "(the same masks for every teacher). Wrong homophone given the right syllable: of the "
        "homophone positions where the hypothesis has the right syllable, the share with "
        "another character of it (homophones are the same audio here, so only context decides). "
        "Differences: in points, against the stock baseline and against the same system with "
        f"the untrained teacher, with 95% intervals from {BOOTSTRAP_SAMPLES:,} paired bootstrap "
        "resamples of the utterances (per-utterance counts averaged over seeds); an interval "
        "under 0 means fewer errors than the reference.",
        "",
        "### Teachers", "",
        "| steps | pretraining (min) | held-out MLM accuracy | corpus sentences MLM accuracy "
        "| directory |",
        "|---|---|---|---|---|",
    ]
    for level in levels:
        lines.append(f"| {level.steps} | {level.accuracy['minutes']:.1f} | "
                     f"{level.accuracy['heldout']:.3f} | {level.accuracy['corpus']:.3f} | "
                     f"{level.teacher} |")
    lines.append("")
    for s in sets:
        lines += [
            f"### {s}", "",
            "| system | teacher steps | MLM accuracy | CER (%) | CER vs baseline | "
            "CER vs untrained teacher | errors at homophone positions (%) | wrong homophone "
            "given the right syllable (%) | share vs baseline | share vs untrained teacher |",
            "|---" * 10 + "|",
            f"| {NAMES['baseline']} | - | - | {mean_and_deviation(baseline.cer[s])} | - | - | "
            f"{mean_and_deviation(baseline.position_errors[s])} | {mean_and_deviation(baseline.share[s])} | - | - |",
        ]
        for system in systems:
            untrained = levels[0].scored[system]
            for level in levels:
                scored = level.scored[system]
                against_untrained = ("-" if level is levels[0] else
                                     str(scored.cer_against(untrained, s)))
                share_untrained = ("-" if level is levels[0] else
                                   format_interval(scored.share_against(untrained, s)))
                lines.append(
                    f"| {NAMES.get(system, system)} | {level.steps} | "
                    f"{level.accuracy['heldout']:.3f} | {mean_and_deviation(scored.cer[s])} | "
                    f"{scored.cer_against(baseline, s)} | {against_untrained} | "
                    f"{mean_and_deviation(scored.position_errors[s])} | {mean_and_deviation(scored.share[s])} | "
                    f"{format_interval(scored.share_against(baseline, s))} | {share_untrained} |")
        lines.append("")
    lines += ["### Reading", "", *reading_lines(levels, systems, sets), ""]
    runs = [(lv.runs[system], system) for system in systems for lv in levels]
    lines += ["Runs: " + "; ".join(
        f"{NAMES.get(system, system)} with {run.teacher}: exp/asr_{run.system}"
        f"{'_' + run.tag if run.tag else ''}_seed<seed>" for run, system in runs) + "."]
    teacher_minutes = sum(lv.accuracy["minutes"] for lv in levels)
    training_minutes = sum(sum(x.runs.train_seconds) for lv in levels for x in lv.scored.values()) / 60
    lines.append(f"Compute of the axis on the machine that ran it: {teacher_minutes:.0f} min of "
                 f"teacher pretraining and {training_minutes:.0f} min of transfer-system training "
                 "(run.sh's train_seconds; the baseline's runs and decoding not counted), "
                 f"{(teacher_minutes + training_minutes) / 60:.1f} h in all.")
    lines += ["", f"![CER and wrong-homophone share against the teacher's MLM accuracy]({PLOT})", ""]
    return "\n".join(lines)


def plot_axis(path: Path, levels: Sequence[Level], baseline: Scored, systems: Sequence[str],
              sets: Sequence[str]) -> None:
    """CER and the wrong-homophone share against held-out MLM accuracy: one line per
    system and set, seed deviation as error bars, the baseline dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = [lv.accuracy["heldout"] for lv in levels]
    figure, axes = plt.subplots(1, 2, figsize=(9.0, 3.8))
    styles = {s: style for s, style in zip(sets, ("-", "--", ":", "-."))}
    colors = {system: f"C{i}" for i, system in enumerate(systems)}
    for panel, (metric, title) in zip(axes, (("cer", "CER (%)"),
                                             ("share", "wrong homophone, right syllable (%)"))):
        for system in systems:
            for s in sets:
                values = [mean_sd(getattr(lv.scored[system], metric)[s]) for lv in levels]
                panel.errorbar(accuracy, [m for m, _ in values], yerr=[d for _, d in values],
                               marker="o", capsize=3, linestyle=styles[s], color=colors[system],
                               label=f"{NAMES.get(system, system)}, {s}")
        for s in sets:
            level = mean_sd(getattr(baseline, metric)[s])[0]
            if not math.isnan(level):
                panel.axhline(level, color="gray", linestyle=styles[s], linewidth=1,
                              label=f"baseline, {s}")
        panel.set_title(title, fontsize=10)
        panel.set_xlabel("teacher's held-out MLM accuracy")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(word) for word in text.split()]
    except ValueError:
        raise AxisError(f"--steps takes non-negative integers, got '{text}'") from None
    if not steps or min(steps) < 0 or len(set(steps)) != len(steps):
        raise AxisError(f"--steps takes distinct non-negative integers, got '{text}'")
    if 0 not in steps:
        raise AxisError(f"--steps '{text}' has no 0: the untrained teacher is the axis's reference")
    return sorted(steps)


def parse_seeds(text: str, option: str) -> list[str]:
    seeds = text.replace(",", " ").split()
    if not seeds or not all(s.isdigit() for s in seeds) or len(set(seeds)) != len(seeds):
        raise AxisError(f"{option} takes distinct non-negative integers, got '{text}'")
    return seeds


def seeds_by_system(args, systems: Sequence[str]) -> dict[str, list[str]]:
    seeds = {s: parse_seeds(args.seeds, "--seeds") for s in ("baseline", *systems)}
    for item in args.seeds_of:
        system, equals, listed = item.partition("=")
        if not equals or system not in seeds:
            raise AxisError(f"--seeds_of '{item}' is not SYSTEM=SEEDS with SYSTEM one of "
                            f"{', '.join(seeds)} (e.g. --seeds_of otbert=0,1)")
        seeds[system] = parse_seeds(listed, f"--seeds_of {system}")
    return seeds


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=DEFAULT_STEPS,
                        help="teacher budgets in optimizer steps, 0 (untrained) included")
    parser.add_argument("--systems", default="gmot",
                        help="transfer systems (model: gmot configs) trained with every teacher, "
                             "e.g. \"gmot otbert\" (each adds about 17 min per seed on 2 cores)")
    parser.add_argument("--seeds", default="0 1 2", help="ESPnet seeds of every system")
    parser.add_argument("--seeds_of", action="append", default=[], metavar="SYSTEM=SEEDS",
                        help="other seeds for one system (or the baseline), e.g. otbert=0,1")
    parser.add_argument("--out_dir", type=Path, default=RECIPE / "teacher_axis",
                        help="where RESULTS.md and the plot go")
    parser.add_argument("--results", type=Path, default=RECIPE / "RESULTS.md",
                        help="the demo's RESULTS.md, whose teacher-strength section is replaced")
    parser.add_argument("--exp", type=Path, default=RECIPE / "exp",
                        help="the runs' exp dir (another one only with --report_only)")
    parser.add_argument("--report_only", action="store_true",
                        help="write the tables and the plot from finished runs; train nothing")
    parser.add_argument("--max_epoch", type=int, default=None,
                        help="epochs of every run (default: the configs' max_epoch)")
    parser.add_argument("--test_sets", default=None, help="sets to decode and score (run.sh: 'dev test')")
    parser.add_argument("--nj", type=int, default=None, help="run.sh's parallel jobs")
    parser.add_argument("--python", default=None, help="the Python run.sh and the teachers run with")
    return parser


def call(command: Sequence[str], cwd: Path, what: str) -> None:
    print(f"teacher_axis: {what}: {shlex.join(command)}", flush=True)
    done = subprocess.run(list(command), cwd=cwd)
    if done.returncode != 0:
        raise AxisError(f"{what} failed (exit {done.returncode}); fix it and run the axis again "
                        "to resume")


def axis(args) -> None:
    recipe = args.exp.resolve().parent if args.report_only else RECIPE
    if not args.report_only and args.exp.resolve() != (RECIPE / "exp").resolve():
        raise AxisError(f"--exp {args.exp}: run.sh trains into {RECIPE / 'exp'}; another exp dir "
                        "only with --report_only")
    steps = parse_steps(args.steps)
    systems = args.systems.split()
    if not systems or "baseline" in systems:
        raise AxisError(f"--systems '{args.systems}': name transfer systems (the baseline is "
                        "always the reference)")
    for system in systems:
        if not config_path(RECIPE, system).exists():
            raise AxisError(f"--systems names '{system}' but {config_path(RECIPE, system)} does not exist")
    seeds = seeds_by_system(args, systems)
    sets = (args.test_sets or "dev test").split()
    python = args.python or sys.executable
    stage2 = stage2_config(recipe)
    stage2_steps = int(stage2["max_steps"])
    runs = {(system, n): axis_run(RECIPE, system, n, stage2_steps) for system in systems for n in steps}
    passthrough = passthrough_options(args)

    if not args.report_only:
        check_prerequisites(args.exp, sets)
        for run, system in [(BASELINE, "baseline"),
                            *((r, s) for (s, _), r in runs.items())]:
            for seed in seeds[system]:
                directory = run_dir(args.exp, run.system, seed, run.tag)
                if (directory / ".done").exists():
                    check_run(directory, run, args.max_epoch)
        if not (recipe / CONTROL_TEACHER / "mlm_eval.json").exists():
            call(teacher_command(stage2, stage2_steps, python, TEACHER, CONTROL_TEACHER), recipe,
                 "evaluating the untrained teacher")
        for n in steps:
            if n not in (0, stage2_steps):
                call(teacher_command(stage2, n, python, teacher_path(n, stage2_steps)), recipe,
                     f"teacher of {n} steps")
        call(BASELINE.command(seeds["baseline"], passthrough), recipe, "baseline")
        for (system, n), run in runs.items():
            call(run.command(seeds[system], passthrough), recipe, f"{system} with {n} steps")

    for n in steps:
        if n not in (0, stage2_steps):
            check_teacher(recipe, n, stage2)
    try:
        manifest = read_manifest(recipe / MANIFEST)
    except (FileNotFoundError, ValueError) as error:  # their messages name the file
        raise AxisError(str(error)) from None
    homophones = chars_by_syllable(manifest)
    syllables = {row.utt_id: row.pinyin.split() for row in manifest}
    data = recipe / "data"

    def scored(run: AxisRun, system: str) -> Scored:
        for seed in seeds[system]:
            directory = run_dir(args.exp, run.system, seed, run.tag)
            missing = [p for p in (directory / ".done",
                                   *(directory / f"decode_{s}" / "score_cer" / "result.txt" for s in sets))
                       if not p.exists()]
            if missing:
                raise AxisError(f"{missing[0]} is missing: train, decode and score it from {recipe} "
                                f"with: {shlex.join(run.command(seeds[system], passthrough))}")
            check_run(directory, run, args.max_epoch)
        try:
            return Scored(SystemRuns(args.exp, run.system, seeds[system], run.tag, sets, data),
                          sets, syllables, homophones)
        except ValueError as error:
            raise AxisError(str(error)) from None

    baseline = scored(BASELINE, "baseline")
    levels = [Level(n, teacher_path(n, stage2_steps), mlm_accuracy(recipe, teacher_path(n, stage2_steps)),
                    {s: scored(runs[s, n], s) for s in systems}, {s: runs[s, n] for s in systems})
              for n in steps]
    section = section_markdown(levels, baseline, systems, seeds, sets, args.max_epoch)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_axis(args.out_dir / PLOT, levels, baseline, systems, sets)
    standalone = section.replace(SECTION, "# Teacher strength", 1).replace("\n### ", "\n## ")
    atomic_write_text(args.out_dir / "RESULTS.md", standalone + "\n")
    if args.results.exists():
        picture, beside = (args.out_dir / PLOT).resolve(), args.results.resolve().parent
        if picture.is_relative_to(beside):
            picture = picture.relative_to(beside)
        embedded = section.replace(f"]({PLOT})", f"]({picture.as_posix()})")
        atomic_write_text(args.results, embed_section(args.results.read_text(encoding="utf-8"),
                                                      SECTION, embedded))
    print(f"teacher_axis: wrote {(args.out_dir / 'RESULTS.md').resolve()} and the plot", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        axis(args)
    except (AxisError, SweepError) as error:
        sys.exit(f"teacher_axis.py: {error}")


if __name__ == "__main__":
    main()
