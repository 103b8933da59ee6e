#!/usr/bin/env python3
"""Sensitivity sweep: vary one transfer hyper-parameter at a time around a system's
config, train, decode and score every setting with run.sh, and tabulate and plot
CER and the coupling diagnostics against the value.

Run it from the recipe directory once run.sh's stages 1-5 exist::

    bash run.sh --stop_stage 5
    python3 local/sweep.py                                  # default grid, seed 0
    python3 local/sweep.py --grid "gw_weight=0,0.1 epsilon=0.1,0.3" --seeds "0 1" --max_epoch 2
    python3 local/sweep.py --report_only                    # table and plots only

Parameters (``--grid name=v1,v2,... name2=...``; default: every parameter with the
values of ``DEFAULT_VALUES`` plus the base config's value):

* ``gw_weight``, ``temporal_weight``, ``epsilon``, ``fusion_scale``:
  ``model_conf.transfer_conf.<name>`` (GM-OT alpha, rho, the entropic
  regularisation and TOT's s);
* ``asr_weight``: ``model_conf.asr_weight``, the papers' lambda.

Every other key keeps the base config's value (``conf/train_asr_<system>.yaml``).
A setting is one call of ``run.sh --stage 6 --stop_stage 8 --systems <system>
--seeds <seeds> --tag <name>-<value> --train_args "--model_conf <key>=<value>"``,
which trains ``exp/asr_<system>_<name>-<value>_seed<seed>``. A setting equal to the
base config's value is the untagged base run ``exp/asr_<system>_seed<seed>``
(run.sh without --tag), trained only if the demo has not trained it already. run.sh
keeps finished trainings and decodings, so an interrupted sweep resumes where it
stopped; every run must have the sweep's number of epochs (its config.yaml says).

Writes ``<out_dir>/RESULTS.md`` (default ``sweep/``): one row per setting with
the CER of each set (sclite; mean over seeds, +- sample deviation with several
seeds), the last epoch's validation ``ot_entropy``, ``ot_monotonicity`` and
``ot_marginal_error`` (mean over seeds) and the training time; and
``<out_dir>/<name>.png`` per parameter: CER against the value, the base value marked
(log axis where the values span more than a decade; symmetric log where one is 0).
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import last_epoch_stats, run_dir  # noqa: E402
from scoring import sclite_error  # noqa: E402

from espnet_gmot.atomic import atomic_write, atomic_write_text  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1]

# name -> the key under model_conf, as ESPnet's --model_conf option writes it
PARAMETERS = {
    "gw_weight": "transfer_conf.gw_weight",
    "temporal_weight": "transfer_conf.temporal_weight",
    "epsilon": "transfer_conf.epsilon",
    "fusion_scale": "transfer_conf.fusion_scale",
    "asr_weight": "asr_weight",
}
# One-at-a-time values around METHOD.md's defaults (alpha 0.02, rho 0.5, eps 0.1,
# s 1.0, lambda 0.3); the base config's own value is added where it is missing.
DEFAULT_VALUES = {
    "gw_weight": (0.0, 0.02, 0.1, 0.5),
    "temporal_weight": (0.0, 0.5, 1.0, 2.0),
    "epsilon": (0.05, 0.1, 0.3),
    "fusion_scale": (0.5, 1.0, 2.0),
    "asr_weight": (0.1, 0.3, 0.6),
}
DIAGNOSTICS = ("ot_entropy", "ot_monotonicity", "ot_marginal_error")


class SweepError(Exception):
    """A problem with the options or the exp dir, worded for the user."""


def format_value(value: float) -> str:
    """A float as YAML reads it back as a float (ESPnet's --model_conf parses values
    with YAML, which takes ``1e-05`` for a string) and as a tag can hold it."""
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def same_value(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def config_path(system: str) -> Path:
    return RECIPE / "conf" / f"train_asr_{system}.yaml"


def nested_get(conf: Mapping, dotted_key: str):
    for part in dotted_key.split("."):
        if not isinstance(conf, Mapping) or part not in conf:
            raise KeyError(dotted_key)
        conf = conf[part]
    return conf


def module_default(key: str) -> float:
    """The default the model or the transfer module uses when the config omits ``key``."""
    if key.startswith("transfer_conf."):
        from espnet_gmot.transfer.module import TRANSFER_DEFAULTS as defaults
    else:
        from espnet_gmot.espnet.model import MODEL_DEFAULTS as defaults
    return defaults[key.split(".")[-1]]


def base_values(config: Mapping, source: str) -> dict[str, float]:
    """Each parameter's value in a training config (``model: gmot``), the modules'
    defaults where the config leaves a key out."""
    if config.get("model") != "gmot":
        raise SweepError(f"{source} has model: {config.get('model')}, not gmot: the sweep varies "
                         "transfer keys; pick a transfer system with --system (e.g. gmot)")
    model_conf = config.get("model_conf") or {}
    values = {}
    for name, key in PARAMETERS.items():
        try:
            values[name] = float(nested_get(model_conf, key))
        except KeyError:
            values[name] = float(module_default(key))
    return values


def default_grid(base: Mapping[str, float]) -> dict[str, list[float]]:
    """``DEFAULT_VALUES`` with each parameter's base value added, ascending."""
    grid = {}
    for name, values in DEFAULT_VALUES.items():
        values = list(values)
        if not any(same_value(v, base[name]) for v in values):
            values.append(base[name])
        grid[name] = sorted(values)
    return grid


def parse_grid(text: str) -> dict[str, list[float]]:
    """``"gw_weight=0,0.1 epsilon=0.1,0.3"`` -> ``{"gw_weight": [0.0, 0.1], ...}``
    (parameters in the order given, values as given)."""
    grid: dict[str, list[float]] = {}
    allowed = ", ".join(PARAMETERS)
    for item in text.split():
        name, equals, listed = item.partition("=")
        if not equals or not listed:
            raise SweepError(f"--grid: '{item}' is not name=value1,value2,... "
                             f"(e.g. --grid \"gw_weight=0,0.1 epsilon=0.1,0.3\")")
        if name not in PARAMETERS:
            raise SweepError(f"--grid: unknown parameter '{name}'; the sweep varies {allowed}")
        if name in grid:
            raise SweepError(f"--grid names {name} twice; list all its values once: {name}=v1,v2")
        values = []
        for word in listed.split(","):
            try:
                value = float(word)
            except ValueError:
                raise SweepError(f"--grid: {name} value '{word}' is not a number") from None
            if not math.isfinite(value):
                raise SweepError(f"--grid: {name} value '{word}' is not finite")
            if any(same_value(value, v) for v in values):
                raise SweepError(f"--grid: {name} lists {word} twice")
            values.append(value)
        grid[name] = values
    if not grid:
        raise SweepError("--grid is empty; give e.g. --grid \"gw_weight=0,0.1\"")
    return grid


@dataclass(frozen=True)
class Setting:
    """One value of one parameter; ``base`` when it is the base config's value."""

    parameter: str
    value: float
    base: bool

    @property
    def key(self) -> str:
        return PARAMETERS[self.parameter]

    @property
    def tag(self) -> str:
        """run.sh's --tag: empty for the base run."""
        return "" if self.base else f"{self.parameter}-{format_value(self.value)}"

    @property
    def train_args(self) -> str:
        return "" if self.base else f"--model_conf {self.key}={format_value(self.value)}"


def grid_settings(grid: Mapping[str, Sequence[float]], base: Mapping[str, float]) -> list[Setting]:
    return [Setting(name, value, same_value(value, base[name]))
            for name, values in grid.items() for value in values]


def run_sh_command(setting: Setting, system: str, seeds: Sequence[str],
                   passthrough: Sequence[str] = ()) -> list[str]:
    """The run.sh call that trains, decodes and scores one setting on every seed."""
    command = ["bash", "run.sh", "--stage", "6", "--stop_stage", "8", "--systems", system,
               "--seeds", " ".join(seeds)]
    if not setting.base:
        command += ["--tag", setting.tag, "--train_args", setting.train_args]
    return command + list(passthrough)


def passthrough_options(args) -> list[str]:
    """The run.sh options given to the sweep (only those given: run.sh's defaults otherwise)."""
    options = []
    for name in ("max_epoch", "test_sets", "nj", "python"):
        if getattr(args, name) is not None:
            options += [f"--{name}", str(getattr(args, name))]
    return options


def check_run_config(directory: Path, setting: Setting, base: Mapping[str, float],
                     max_epoch: int | None) -> None:
    """A finished run must be the setting it is taken for (the base config with one key
    changed) and have the sweep's epochs: run.sh keeps finished runs, so a stale one
    (an older base config, another --max_epoch) would otherwise enter the table."""
    config_file = directory / "config.yaml"
    if not config_file.exists():
        raise SweepError(f"{directory} is marked trained but has no config.yaml; remove {directory} "
                         "and run the sweep again")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    recorded = base_values(config, str(config_file))
    expected = {**base, setting.parameter: setting.value}
    for name, value in expected.items():
        if not same_value(recorded[name], value):
            raise SweepError(
                f"{config_file} has {PARAMETERS[name]} {format_value(recorded[name])}, but the sweep "
                f"takes this run for {name} {format_value(value)} "
                f"({setting.parameter}={format_value(setting.value)}, other keys as in the base config); "
                f"move {directory} aside and run the sweep again to retrain it")
    if max_epoch is not None and config.get("max_epoch") != max_epoch:
        raise SweepError(f"{directory} was trained for max_epoch {config.get('max_epoch')} "
                         f"({config_file}) but the sweep trains for {max_epoch}: give --max_epoch "
                         f"{config.get('max_epoch')}, or move {directory} aside to retrain it")


def check_prerequisites(exp: Path, sets: Sequence[str]) -> None:
    stats = exp / "asr_stats" / "train" / "feats_stats.npz"
    if not stats.exists():
        raise SweepError(f"{stats} is missing: run run.sh --stop_stage 5 first")
    for set_name in ("train", *sets):
        feats = RECIPE / "dump" / "fbank_pitch" / set_name / "feats.scp"
        if not feats.exists():
            raise SweepError(f"{feats} is missing: run run.sh --stop_stage 5 "
                             f"--test_sets \"{' '.join(sets)}\" first")


def mean_and_deviation(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Row:
    setting: Setting
    cer: dict[str, tuple[float, float | None]]   # set -> (mean, sample deviation or None)
    diagnostics: dict[str, float | None]         # mean over seeds; None if not logged
    train_seconds: float


def collect(setting: Setting, base: Mapping[str, float], exp: Path, system: str,
            seeds: Sequence[str], sets: Sequence[str], max_epoch: int | None,
            command: Sequence[str]) -> Row:
    """One table row from the run dirs of a setting (one per seed)."""
    cers: dict[str, list[float]] = {s: [] for s in sets}
    diagnostics: dict[str, list[float]] = {d: [] for d in DIAGNOSTICS}
    seconds = []
    for seed in seeds:
        directory = run_dir(exp, system, seed, setting.tag)
        needed = [directory / ".done", directory / "train_seconds", directory / "train.log",
                  *(directory / f"decode_{s}" / "score_cer" / "result.txt" for s in sets)]
        missing = [path for path in needed if not path.exists()]
        if missing:
            raise SweepError(f"{directory}: {missing[0].relative_to(directory)} is missing "
                             f"({setting.parameter}={format_value(setting.value)}, seed {seed}); "
                             f"train, decode and score it from {RECIPE} with: {shlex.join(command)}")
        check_run_config(directory, setting, base, max_epoch)
        try:  # their messages name the file
            for set_name in sets:
                cers[set_name].append(
                    sclite_error(directory / f"decode_{set_name}" / "score_cer" / "result.txt"))
            stats = last_epoch_stats(directory / "train.log")
        except ValueError as error:
            raise SweepError(f"{error} (rerun: {shlex.join(command)})") from None
        for name in DIAGNOSTICS:
            if name in stats:
                diagnostics[name].append(stats[name])
        seconds.append(float((directory / "train_seconds").read_text().strip()))
    return Row(
        setting,
        {s: mean_and_deviation(v) for s, v in cers.items()},
        {d: statistics.fmean(v) if len(v) == len(seeds) else None for d, v in diagnostics.items()},
        statistics.fmean(seconds),
    )


def format_cer(mean: float, deviation: float | None) -> str:
    return f"{mean:.1f}" if deviation is None else f"{mean:.1f} ± {deviation:.1f}"


def format_diagnostic(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1e}" if name == "ot_marginal_error" else f"{value:.3f}"


def results_markdown(rows: Sequence[Row], system: str, seeds: Sequence[str], sets: Sequence[str],
                     max_epoch: int | None, plots: Mapping[str, str]) -> str:
    header = ["parameter", "value", *(f"{s} CER (%)" for s in sets), *DIAGNOSTICS,
              "training time (s)"]
    epochs = max_epoch if max_epoch is not None else "the config's"
    lines = [
        f"# Sensitivity of {system} (conf/train_asr_{system}.yaml)",
        "",
        "One parameter varied at a time, every other key at the base config's value; "
        f"{epochs} epoch(s), "
        f"seed(s) {', '.join(seeds)}. CER: sclite on the decoded sets "
        "(run.sh stages 7-8), "
        + ("mean ± sample deviation over seeds" if len(seeds) > 1 else "one seed")
        + ". Coupling diagnostics: the last epoch's validation means (ESPnet's train.log; "
        "mean over seeds): ot_entropy is H(g)/log(la lt) (1 uniform, 0 a hard alignment), "
        "ot_monotonicity the share of frame steps whose expected token does not go back. "
        "Training time: mean over seeds of run.sh's train_seconds. "
        "\"(base)\" marks the base config's value (the untagged run exp/asr_"
        f"{system}_seed<seed>); the others are exp/asr_{system}_<parameter>-<value>_seed<seed>.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        value = format_value(row.setting.value) + (" (base)" if row.setting.base else "")
        cells = [row.setting.parameter, value, *(format_cer(*row.cer[s]) for s in sets),
                 *(format_diagnostic(d, row.diagnostics[d]) for d in DIAGNOSTICS),
                 f"{row.train_seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for parameter, picture in plots.items():
        lines.append(f"![CER against {parameter}]({picture})")
    return "\n".join(lines) + "\n"


def plot_parameter(path: Path, parameter: str, rows: Sequence[Row], sets: Sequence[str],
                   base_value: float) -> None:
    """CER of each set against the parameter's value, the base value marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r.setting.value)
    values = [r.setting.value for r in rows]
    figure, axes = plt.subplots(figsize=(5.0, 3.6))
    for set_name in sets:
        means = [r.cer[set_name][0] for r in rows]
        deviations = [r.cer[set_name][1] or 0.0 for r in rows]
        axes.errorbar(values, means, yerr=deviations, marker="o", capsize=3, label=f"{set_name}")
    # Log scale where the values span more than a decade (symmetric log, linear
    # around 0, where 0 is one of them: gw_weight 0 0.02 0.1 0.5 would crowd at 0).
    positive = [v for v in values if v > 0]
    spread = len(positive) > 1 and max(positive) > 10 * min(positive)
    if spread and min(values) > 0:
        axes.set_xscale("log")
    elif spread and min(values) == 0:
        axes.set_xscale("symlog", linthresh=min(positive))
    if base_value > 0 or axes.get_xscale() != "log":
        axes.axvline(base_value, color="gray", linestyle=":", label=f"base ({format_value(base_value)})")
    axes.set_xticks(values)
    axes.set_xticklabels([format_value(v) for v in values])
    axes.minorticks_off()
    axes.set_xlabel(f"model_conf.{PARAMETERS[parameter]}")
    axes.set_ylabel("CER (%)")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=120)
    plt.close(figure)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="default values: " + "; ".join(
            f"{name} {' '.join(format_value(v) for v in values)}"
            for name, values in DEFAULT_VALUES.items()))
    parser.add_argument("--system", default="gmot",
                        help="base system: conf/train_asr_<system>.yaml, a model: gmot config")
    parser.add_argument("--seeds", default="0", help="ESPnet seeds, each setting trains once per seed")
    parser.add_argument("--grid", default=None,
                        help=f"'name=v1,v2 name2=...' over {', '.join(PARAMETERS)}; default: "
                             "every parameter, the default values below plus the base value")
    parser.add_argument("--out_dir", type=Path, default=Path("sweep"),
                        help="where RESULTS.md and the plots go")
    parser.add_argument("--exp", type=Path, default=RECIPE / "exp",
                        help="the runs' exp dir (run.sh writes to the recipe's exp/; another one "
                             "only with --report_only)")
    parser.add_argument("--report_only", action="store_true",
                        help="write the table and plots from finished runs; train nothing")
    # Passed to run.sh when given
    parser.add_argument("--max_epoch", type=int, default=None,
                        help="epochs of every run (default: the base config's max_epoch)")
    parser.add_argument("--test_sets", default=None, help="sets to decode and score (run.sh: 'dev test')")
    parser.add_argument("--nj", type=int, default=None, help="run.sh's parallel jobs")
    parser.add_argument("--python", default=None, help="the Python run.sh runs ESPnet with")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    try:
        sweep(args)
    except SweepError as error:
        sys.exit(f"sweep.py: {error}")


def sweep(args) -> None:
    seeds = args.seeds.split()
    if not seeds or not all(s.isdigit() for s in seeds) or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds takes distinct non-negative integers, got '{args.seeds}'")
    sets = (args.test_sets or "dev test").split()
    if not sets:
        raise SweepError("--test_sets is empty; give e.g. --test_sets \"dev test\"")
    source = config_path(args.system)
    if not source.exists():
        raise SweepError(f"--system {args.system}: {source} does not exist")
    base_config = yaml.safe_load(source.read_text(encoding="utf-8"))
    base = base_values(base_config, str(source))
    max_epoch = args.max_epoch if args.max_epoch is not None else base_config.get("max_epoch")
    grid = parse_grid(args.grid) if args.grid is not None else default_grid(base)
    settings = grid_settings(grid, base)
    passthrough = passthrough_options(args)
    commands = {s: run_sh_command(s, args.system, seeds, passthrough) for s in settings}

    if not args.report_only:
        if args.exp.resolve() != (RECIPE / "exp").resolve():
            raise SweepError(f"--exp {args.exp}: run.sh trains into {RECIPE / 'exp'}; "
                             "another exp dir only with --report_only")
        check_prerequisites(args.exp, sets)
        # The base run first and once, however many parameters list their base value.
        ordered = sorted({s.tag: s for s in settings}.values(), key=lambda s: not s.base)
        # run.sh would keep a stale finished run: refuse before anything is trained.
        for setting in ordered:
            for seed in seeds:
                directory = run_dir(args.exp, args.system, seed, setting.tag)
                if (directory / ".done").exists():
                    check_run_config(directory, setting, base, max_epoch)
        for setting in ordered:
            label = "base run" if setting.base else f"{setting.parameter}={format_value(setting.value)}"
            print(f"sweep: {label}: {shlex.join(commands[setting])}", flush=True)
            done = subprocess.run(commands[setting], cwd=RECIPE)
            if done.returncode != 0:
                raise SweepError(f"{label}: run.sh failed (exit {done.returncode}); see the train.log of "
                                 f"{run_dir(args.exp, args.system, '<seed>', setting.tag)} and run "
                                 "the sweep again to resume")

    rows = [collect(s, base, args.exp, args.system, seeds, sets, max_epoch, commands[s])
            for s in settings]
    plots = {}
    for parameter in grid:
        picture = f"{parameter}.png"
        plot_parameter(args.out_dir / picture, parameter,
                       [r for r in rows if r.setting.parameter == parameter], sets, base[parameter])
        plots[parameter] = picture
    results = args.out_dir / "RESULTS.md"
    markdown = results_markdown(rows, args.system, seeds, sets, max_epoch, plots)
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results, markdown)
    print(f"sweep: wrote {results.resolve()} and {len(plots)} plot(s)", flush=True)


if __name__ == "__main__":
    main()
