"""The demo's sensitivity sweep (egs2/synth_mandarin/asr_gmot/local/sweep.py): grid,
run.sh calls, the table and plots from a hand-made exp dir, and (slow) a real sweep
of two settings on the tiny corpus."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RECIPE = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot"
SCRIPT = RECIPE / "local" / "sweep.py"
# The environment's bin/ first: tools/install.sh links sclite there.
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

BASE_CONFIG = yaml.safe_load((RECIPE / "conf" / "train_asr_gmot.yaml").read_text())
BASE_TRANSFER = BASE_CONFIG["model_conf"]["transfer_conf"]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("synth_mandarin_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def sclite_result(err: float) -> str:
    """The lines of an sclite result.txt that the sweep reads (as test_write_results.py)."""
    return ("|  SPKR  |  # Snt  # Wrd  | Corr    Sub    Del    Ins    Err  S.Err |\n"
            f"| Sum/Avg|   10     120  | 90.0    8.0    2.0    1.0   {err:.2f}  50.0 |\n")


def epoch_line(epoch: int, entropy: float, monotonicity: float, marginal_error: float) -> str:
    """ESPnet's trainer line with the [train] and [valid] statistics of an epoch."""
    return (f"[vm] 2026-11-21 22:36:49,935 (trainer:394) INFO: {epoch}epoch results: [train] "
            "loss=4.114, ot_entropy=0.111, ot_monotonicity=0.222, ot_marginal_error=3.000e-07, "
            "time=53.18 seconds, total_count=772, [valid] loss_ctc=7.054, cer_ctc=0.259, "
            f"ot_entropy={entropy}, ot_monotonicity={monotonicity}, "
            f"ot_marginal_error={marginal_error:.3e}, time=0.89 seconds, total_count=28\n")


def make_run(directory: Path, overrides: dict, cers: dict, diagnostics, seconds: int,
             max_epoch: int = 4):
    """A finished run dir as run.sh stages 6-8 leave it."""
    directory.mkdir(parents=True)
    config = yaml.safe_load(yaml.safe_dump(BASE_CONFIG))
    for key, value in overrides.items():
        *parents, name = key.split(".")
        conf = config["model_conf"]
        for parent in parents:
            conf = conf[parent]
        conf[name] = value
    config["max_epoch"] = max_epoch
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "train.log").write_text(
        epoch_line(max_epoch - 1, 0.9, 0.5, 1e-3) + epoch_line(max_epoch, *diagnostics))
    (directory / "train_seconds").write_text(f"{seconds}\n")
    (directory / ".done").touch()
    for set_name, cer in cers.items():
        score = directory / f"decode_{set_name}" / "score_cer"
        score.mkdir(parents=True)
        (score / "result.txt").write_text(sclite_result(cer))


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ")][1:]


def test_default_grid_holds_each_base_value(sweep):
    base = sweep.base_values(BASE_CONFIG, "conf/train_asr_gmot.yaml")
    assert base == {"gw_weight": BASE_TRANSFER["gw_weight"],
                    "temporal_weight": BASE_TRANSFER["temporal_weight"],
                    "epsilon": BASE_TRANSFER["epsilon"],
                    "fusion_scale": BASE_TRANSFER["fusion_scale"],
                    "asr_weight": BASE_CONFIG["model_conf"]["asr_weight"]}
    grid = sweep.default_grid(base)
    assert list(grid) == ["gw_weight", "temporal_weight", "epsilon", "fusion_scale", "asr_weight"]
    for name, values in grid.items():
        assert base[name] in values, name
        assert values == sorted(values) and len(values) >= 3, name
    # A base value off the default list joins it, in order.
    assert sweep.default_grid({**base, "gw_weight": 0.05})["gw_weight"] == [0.0, 0.02, 0.05, 0.1, 0.5]


def test_keys_missing_from_the_config_take_the_modules_defaults(sweep):
    config = {"model": "gmot", "model_conf": {"transfer_conf": {"gw_weight": 0.2}}}
    assert sweep.base_values(config, "x.yaml") == {
        "gw_weight": 0.2, "temporal_weight": 0.5, "epsilon": 0.1, "fusion_scale": 1.0,
        "asr_weight": 0.3}
    with pytest.raises(sweep.SweepError, match="x.yaml has model: espnet, not gmot"):
        sweep.base_values({"model": "espnet"}, "x.yaml")


def test_module_defaults_are_what_the_model_and_the_transfer_module_use(sweep):
    """The sweep reads the defaults (TRANSFER_DEFAULTS, MODEL_DEFAULTS) that the
    constructors use: a transfer module built without arguments has them, its solver
    settings included (inner_iter is their max_iter)."""
    import inspect

    from espnet_gmot.espnet.model import ESPnetGMOTModel
    from espnet_gmot.transfer.module import TRANSFER_DEFAULTS, OTKnowledgeTransfer

    module = OTKnowledgeTransfer(4)
    settings = module.settings
    used = dict(inner_iter=settings.max_iter, tol=settings.tol, gradient=settings.gradient,
                overrelaxation=settings.overrelaxation, check_every=settings.check_every,
                newton_steps=settings.newton_steps, marginals=module.marginals,
                frame_relaxation=None, token_relaxation=None,
                **{key: getattr(module, key) for key in (
                    "plm_dim", "gw_weight", "temporal_weight", "epsilon", "fusion_scale",
                    "outer_iter", "align_special_tokens")})
    assert set(used) == set(TRANSFER_DEFAULTS)
    for key, value in used.items():
        assert sweep.module_default(f"transfer_conf.{key}") == value, key
    model_parameters = inspect.signature(ESPnetGMOTModel.__init__).parameters
    for key in ("asr_weight", "transfer_weight"):
        assert sweep.module_default(key) == model_parameters[key].default, key


def test_grid_option(sweep):
    assert sweep.parse_grid("gw_weight=0,0.1  epsilon=0.1,0.3") == {
        "gw_weight": [0.0, 0.1], "epsilon": [0.1, 0.3]}
    assert sweep.parse_grid("asr_weight=0.6") == {"asr_weight": [0.6]}
    with pytest.raises(sweep.SweepError, match="unknown parameter 'gw'; the sweep varies gw_weight, "
                                               "temporal_weight, epsilon, fusion_scale, asr_weight"):
        sweep.parse_grid("gw=0.1")
    for bad, message in [("gw_weight", "not name=value1,value2"), ("gw_weight=", "not name=value1"),
                         ("gw_weight=0.1,x", "gw_weight value 'x' is not a number"),
                         ("gw_weight=0.1,nan", "not finite"),
                         ("epsilon=0.1 epsilon=0.3", "names epsilon twice"),
                         ("epsilon=0.1,0.10", "lists 0.10 twice"), ("  ", "--grid is empty")]:
        with pytest.raises(sweep.SweepError, match=message):
            sweep.parse_grid(bad)


def test_unknown_grid_key_exits_with_the_allowed_names():
    done = subprocess.run([sys.executable, str(SCRIPT), "--grid", "lambda=0.3"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "sweep.py: --grid: unknown parameter 'lambda'; the sweep varies gw_weight," in done.stderr


def test_values_are_written_as_yaml_floats(sweep):
    for value, text in [(0.0, "0.0"), (1, "1.0"), (0.02, "0.02"), (1e-05, "1.0e-05"), (2.5e-07, "2.5e-07")]:
        assert sweep.format_value(value) == text
        # ESPnet's --model_conf reads the value with YAML; the transfer module is typechecked.
        assert isinstance(yaml.safe_load(text), float) and yaml.safe_load(text) == value


def test_run_sh_command_of_a_setting(sweep):
    base = sweep.base_values(BASE_CONFIG, "conf")
    tagged, at_base = sweep.grid_settings({"gw_weight": [0.1, 0.02]}, base)
    assert tagged == sweep.Setting("gw_weight", 0.1, base=False)
    assert sweep.run_sh_command(tagged, "gmot", ["0", "1"], ["--max_epoch", "1"]) == [
        "bash", "run.sh", "--stage", "6", "--stop_stage", "8", "--systems", "gmot",
        "--seeds", "0 1", "--tag", "gw_weight-0.1",
        "--train_args", "--model_conf transfer_conf.gw_weight=0.1", "--max_epoch", "1"]
    # The base value is the untagged base run.
    assert at_base.base and at_base.tag == "" and at_base.train_args == ""
    assert sweep.run_sh_command(at_base, "gmot", ["0"]) == [
        "bash", "run.sh", "--stage", "6", "--stop_stage", "8", "--systems", "gmot", "--seeds", "0"]
    lam = sweep.Setting("asr_weight", 1.0, base=False)
    assert (lam.tag, lam.train_args) == ("asr_weight-1.0", "--model_conf asr_weight=1.0")
    args = sweep.get_parser().parse_args(["--max_epoch", "2", "--nj", "4", "--test_sets", "test"])
    assert sweep.passthrough_options(args) == ["--max_epoch", "2", "--test_sets", "test", "--nj", "4"]
    assert sweep.passthrough_options(sweep.get_parser().parse_args([])) == []


@pytest.fixture
def hand_made_exp(tmp_path):
    """gw_weight 0.02 (the base run) and 0.1, seeds 0 and 1; temporal_weight 2.0, seed 0 and 1."""
    exp = tmp_path / "exp"
    make_run(exp / "asr_gmot_seed0", {}, {"dev": 20.0, "test": 30.0}, (0.5, 0.9, 2e-7), 50)
    make_run(exp / "asr_gmot_seed1", {}, {"dev": 22.0, "test": 30.0}, (0.7, 0.8, 4e-7), 70)
    make_run(exp / "asr_gmot_gw_weight-0.1_seed0", {"transfer_conf.gw_weight": 0.1},
             {"dev": 18.5, "test": 25.3}, (0.3, 0.95, 1e-6), 61)
    make_run(exp / "asr_gmot_gw_weight-0.1_seed1", {"transfer_conf.gw_weight": 0.1},
             {"dev": 19.5, "test": 26.7}, (0.4, 0.97, 3e-6), 63)
    make_run(exp / "asr_gmot_temporal_weight-2.0_seed0", {"transfer_conf.temporal_weight": 2.0},
             {"dev": 40.0, "test": 41.0}, (0.2, 0.99, 1e-7), 55)
    make_run(exp / "asr_gmot_temporal_weight-2.0_seed1", {"transfer_conf.temporal_weight": 2.0},
             {"dev": 40.0, "test": 43.0}, (0.2, 0.99, 1e-7), 57)
    return exp


def report(sweep, exp: Path, out_dir: Path, *options: str):
    sweep.main(["--report_only", "--exp", str(exp), "--out_dir", str(out_dir), "--seeds", "0 1",
                "--grid", "gw_weight=0.02,0.1 temporal_weight=0.5,2", *options])
    return (out_dir / "RESULTS.md").read_text(encoding="utf-8")


def test_table_and_plots_from_a_hand_made_exp(sweep, hand_made_exp, tmp_path):
    import matplotlib.image

    out_dir = tmp_path / "sweep"
    results = report(sweep, hand_made_exp, out_dir)
    header = [line for line in results.splitlines() if line.startswith("| ")][0]
    assert header == ("| parameter | value | dev CER (%) | test CER (%) | ot_entropy | "
                      "ot_monotonicity | ot_marginal_error | training time (s) |")
    # Means over the two seeds, sample deviations (stdev of 20 and 22 is 1.41), the
    # last epoch's [valid] diagnostics; the base run fills both parameters' base rows.
    assert table_rows(results) == [
        "| gw_weight | 0.02 (base) | 21.0 ± 1.4 | 30.0 ± 0.0 | 0.600 | 0.850 | 3.0e-07 | 60 |",
        "| gw_weight | 0.1 | 19.0 ± 0.7 | 26.0 ± 1.0 | 0.350 | 0.960 | 2.0e-06 | 62 |",
        "| temporal_weight | 0.5 (base) | 21.0 ± 1.4 | 30.0 ± 0.0 | 0.600 | 0.850 | 3.0e-07 | 60 |",
        "| temporal_weight | 2.0 | 40.0 ± 0.0 | 42.0 ± 1.4 | 0.200 | 0.990 | 1.0e-07 | 56 |",
    ]
    assert "4 epoch(s), seed(s) 0, 1" in results
    for parameter in ("gw_weight", "temporal_weight"):
        assert f"![CER against {parameter}]({parameter}.png)" in results
        image = matplotlib.image.imread(out_dir / f"{parameter}.png")
        assert image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05  # not a blank canvas
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in out_dir.iterdir()) == ["RESULTS.md", "gw_weight.png",
                                                         "temporal_weight.png"]


def test_one_seed_has_no_deviation(sweep, hand_made_exp, tmp_path):
    sweep.main(["--report_only", "--exp", str(hand_made_exp), "--out_dir", str(tmp_path / "s"),
                "--grid", "gw_weight=0.1,0.02", "--test_sets", "test"])
    results = (tmp_path / "s" / "RESULTS.md").read_text(encoding="utf-8")
    # Rows in the order of --grid; seed 0 only; only the sets asked for.
    assert table_rows(results) == [
        "| gw_weight | 0.1 | 25.3 | 0.300 | 0.950 | 1.0e-06 | 61 |",
        "| gw_weight | 0.02 (base) | 30.0 | 0.500 | 0.900 | 2.0e-07 | 50 |",
    ]
    assert "one seed" in results and "dev CER" not in results


def test_log_axis_only_where_positive_values_span_a_decade(sweep, tmp_path, monkeypatch):
    import matplotlib.axes

    scales = []
    real = matplotlib.axes.Axes.set_xscale
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xscale",
                        lambda self, value, **kw: (scales.append(value), real(self, value, **kw)))

    def rows(values):
        return [sweep.Row(sweep.Setting("epsilon", v, v == 0.1), {"dev": (10.0, None)},
                          dict.fromkeys(sweep.DIAGNOSTICS), 1.0) for v in values]

    for values, expected in [((0.01, 0.1, 0.3), ["log"]), ((0.05, 0.1, 0.3), []),
                             ((0.0, 0.1, 2.0), ["symlog"]), ((0.0, 0.5, 2.0), []),
                             ((-1.0, 0.1, 2.0), [])]:
        scales.clear()
        sweep.plot_parameter(tmp_path / "e.png", "epsilon", rows(values), ["dev"], 0.1)
        assert scales == expected, values
        assert (tmp_path / "e.png").stat().st_size > 1000


def test_missing_run_names_the_run_dir_and_the_command(sweep, hand_made_exp, tmp_path):
    shutil.rmtree(hand_made_exp / "asr_gmot_gw_weight-0.1_seed1" / "decode_test")
    with pytest.raises(SystemExit) as exit_info:
        report(sweep, hand_made_exp, tmp_path / "sweep")
    message = str(exit_info.value.code)
    assert f"{hand_made_exp / 'asr_gmot_gw_weight-0.1_seed1'}: decode_test/score_cer/result.txt " \
           "is missing (gw_weight=0.1, seed 1)" in message
    assert ("bash run.sh --stage 6 --stop_stage 8 --systems gmot --seeds '0 1' --tag gw_weight-0.1 "
            "--train_args '--model_conf transfer_conf.gw_weight=0.1'") in message
    assert not (tmp_path / "sweep" / "RESULTS.md").exists()


def test_unreadable_logs_and_bad_seeds_are_named(sweep, hand_made_exp, tmp_path):
    (hand_made_exp / "asr_gmot_seed1" / "train.log").write_text("killed before the first epoch\n")
    with pytest.raises(SystemExit, match=r"asr_gmot_seed1/train.log: no 'epoch results' line; .*"
                                         r"\(rerun: bash run.sh .* --seeds '0 1'\)"):
        report(sweep, hand_made_exp, tmp_path / "sweep")
    with pytest.raises(SystemExit, match="--seeds takes distinct non-negative integers, got '0 0'"):
        sweep.main(["--report_only", "--seeds", "0 0"])
    with pytest.raises(SystemExit, match="conf/train_asr_baseline.yaml has model: espnet, not gmot"):
        sweep.main(["--report_only", "--system", "baseline"])
    with pytest.raises(SystemExit, match="--system nosuch: .*conf/train_asr_nosuch.yaml does not exist"):
        sweep.main(["--report_only", "--system", "nosuch"])


def test_stale_runs_are_refused(sweep, hand_made_exp, tmp_path):
    # Another number of epochs than the sweep's
    with pytest.raises(SystemExit, match=r"asr_gmot_seed0 was trained for max_epoch 4 .* but the "
                                         r"sweep trains for 2: give --max_epoch 4"):
        report(sweep, hand_made_exp, tmp_path / "sweep", "--max_epoch", "2")
    # A tagged run whose config does not hold its value
    config_file = hand_made_exp / "asr_gmot_temporal_weight-2.0_seed1" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["model_conf"]["transfer_conf"]["temporal_weight"] = 1.0
    config_file.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="has transfer_conf.temporal_weight 1.0, but the sweep takes "
                                         "this run for temporal_weight 2.0"):
        report(sweep, hand_made_exp, tmp_path / "sweep")


def test_sweep_calls_run_sh_once_per_setting_and_the_base_once(sweep, tmp_path, monkeypatch):
    recipe = tmp_path / "asr_gmot"
    shutil.copytree(RECIPE / "conf", recipe / "conf")
    monkeypatch.setattr(sweep, "RECIPE", recipe)
    calls = []

    def fake_run_sh(command, cwd):
        """Leaves what run.sh stages 6-8 leave, for the setting the command names."""
        assert cwd == recipe and command[:2] == ["bash", "run.sh"]
        calls.append(command)
        options = dict(zip(command[2::2], command[3::2]))
        tag = options.get("--tag", "")
        overrides = {}
        if tag:
            key, value = options["--train_args"].removeprefix("--model_conf ").split("=")
            overrides[key] = float(value)
        for seed in options["--seeds"].split():
            make_run(recipe / "exp" / f"asr_gmot{'_' + tag if tag else ''}_seed{seed}", overrides,
                     {"dev": 10.0 + len(calls), "test": 20.0}, (0.5, 0.9, 1e-7), 9, max_epoch=1)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run_sh)
    options = ["--grid", "gw_weight=0.1,0.02 asr_weight=0.3,0.6", "--max_epoch", "1",
               "--out_dir", str(tmp_path / "sweep")]
    with pytest.raises(SystemExit, match=r"exp/asr_stats/train/feats_stats.npz is missing: "
                                         r"run run.sh --stop_stage 5 first"):
        sweep.main(options)
    (recipe / "exp" / "asr_stats" / "train").mkdir(parents=True)
    (recipe / "exp" / "asr_stats" / "train" / "feats_stats.npz").touch()
    with pytest.raises(SystemExit, match=r"dump/fbank_pitch/train/feats.scp is missing"):
        sweep.main(options)
    for set_name in ("train", "dev", "test"):
        (recipe / "dump" / "fbank_pitch" / set_name).mkdir(parents=True)
        (recipe / "dump" / "fbank_pitch" / set_name / "feats.scp").touch()
    # A finished run of another number of epochs stops the sweep before any training.
    stale = recipe / "exp" / "asr_gmot_asr_weight-0.6_seed0"
    make_run(stale, {"asr_weight": 0.6}, {"dev": 1.0, "test": 1.0}, (0.5, 0.9, 1e-7), 9, max_epoch=4)
    with pytest.raises(SystemExit, match="asr_weight-0.6_seed0 was trained for max_epoch 4"):
        sweep.main(options)
    assert calls == []
    shutil.rmtree(stale)
    sweep.main(options)
    assert [c[8:] for c in calls] == [
        ["--seeds", "0", "--max_epoch", "1"],  # the base run first, once
        ["--seeds", "0", "--tag", "gw_weight-0.1",
         "--train_args", "--model_conf transfer_conf.gw_weight=0.1", "--max_epoch", "1"],
        ["--seeds", "0", "--tag", "asr_weight-0.6",
         "--train_args", "--model_conf asr_weight=0.6", "--max_epoch", "1"],
    ]
    assert table_rows((tmp_path / "sweep" / "RESULTS.md").read_text(encoding="utf-8")) == [
        "| gw_weight | 0.1 | 12.0 | 20.0 | 0.500 | 0.900 | 1.0e-07 | 9 |",
        "| gw_weight | 0.02 (base) | 11.0 | 20.0 | 0.500 | 0.900 | 1.0e-07 | 9 |",
        "| asr_weight | 0.3 (base) | 11.0 | 20.0 | 0.500 | 0.900 | 1.0e-07 | 9 |",
        "| asr_weight | 0.6 | 13.0 | 20.0 | 0.500 | 0.900 | 1.0e-07 | 9 |",
    ]
    # Training into another exp dir than run.sh's is refused.
    with pytest.raises(SystemExit, match="run.sh trains into"):
        sweep.main([*options, "--exp", str(tmp_path / "elsewhere")])


# The tiny demo up to the features and statistics, then a sweep of two settings: slow.
sweep_test = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sclite", path=PATH) is None,
    reason="needs espeak-ng and sclite (tools/install.sh installs them)",
)


def sclite_cer(result: Path) -> float:
    """The Err column of sclite's Sum/Avg line, read here independently of local/scoring.py."""
    match = re.search(r"\| Sum/Avg\s*\|\s*\d+\s+\d+\s*\|(?:\s*[0-9.]+){4}\s+([0-9.]+)",
                      result.read_text(errors="replace"))
    assert match, f"{result}: no Sum/Avg line"
    return float(match[1])


def table_by_value(markdown: str) -> dict[str, dict[str, str]]:
    """The sweep table as ``{value cell: {column header: cell}}``."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {cells[1]: dict(zip(header, cells)) for cells in rows}


@pytest.mark.slow
@sweep_test
def test_tiny_sweep_matches_sclite_and_resumes(tmp_path):
    recipe = tmp_path / "asr_gmot"
    shutil.copytree(RECIPE, recipe, ignore=shutil.ignore_patterns(
        "downloads", "data", "dump", "exp", "couplings", "RESULTS.md", "sweep"))
    env = dict(os.environ, PATH=PATH, OMP_NUM_THREADS="1")
    prepared = subprocess.run(
        ["bash", "run.sh", "--corpus_opts", "--tiny", "--plm_steps", "30", "--max_epoch", "1",
         "--stop_stage", "5", "--systems", "gmot"],
        cwd=recipe, capture_output=True, text=True, env=env, timeout=600)
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]

    def run_sweep():
        done = subprocess.run(
            [sys.executable, "local/sweep.py", "--grid", "gw_weight=0.02,0.1", "--max_epoch", "1"],
            cwd=recipe, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    run_sweep()
    runs = {0.02: recipe / "exp" / "asr_gmot_seed0",  # the base value: the untagged base run
            0.1: recipe / "exp" / "asr_gmot_gw_weight-0.1_seed0"}
    table = table_by_value((recipe / "sweep" / "RESULTS.md").read_text(encoding="utf-8"))
    assert sorted(table) == ["0.02 (base)", "0.1"]
    for value, label in [(0.02, "0.02 (base)"), (0.1, "0.1")]:
        for set_name in ("dev", "test"):
            cer = sclite_cer(runs[value] / f"decode_{set_name}" / "score_cer" / "result.txt")
            assert float(table[label][f"{set_name} CER (%)"]) == round(cer, 1)
        config = yaml.safe_load((runs[value] / "config.yaml").read_text())
        assert config["model_conf"]["transfer_conf"]["gw_weight"] == value
        assert config["max_epoch"] == 1
        assert 0.0 < float(table[label]["ot_entropy"]) <= 1.0
    assert (recipe / "sweep" / "gw_weight.png").stat().st_size > 1000

    # Run again: nothing is retrained.
    models = {v: (d / "valid.cer_ctc.ave.pth").stat().st_mtime_ns for v, d in runs.items()}
    again = run_sweep()
    assert again.stdout.count("trained, kept") == 2
    assert {v: (d / "valid.cer_ctc.ave.pth").stat().st_mtime_ns for v, d in runs.items()} == models
