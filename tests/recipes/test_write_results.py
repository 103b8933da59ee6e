"""The demo's RESULTS.md writer (egs2/synth_mandarin/asr_gmot/local/write_results.py)
on hand-made exp/, data/ and manifest: rows, names, transfer settings, decoding
sentence, seeds, bootstrap intervals and homophone positions."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

LOCAL_DIR = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot" / "local"
sys.path.insert(0, str(LOCAL_DIR))

from tests.recipes.results_standin import (  # noqa: E402
    UTT2SPK,
    sclite_result,
    table,
    write_homophone_manifest,
)


@pytest.fixture(scope="module")
def write_results():
    spec = importlib.util.spec_from_file_location("write_results", LOCAL_DIR / "write_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run(exp: Path, system: str, config: dict, hypotheses: dict, parameters: int = 2,
             seed: int = 0, seconds: int = 12):
    """A run dir as run.sh leaves it; ``hypotheses``: {set: {utt: text}}."""
    directory = exp / f"asr_{system}_seed{seed}"
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "train_seconds").write_text(f"{seconds}\n")
    torch.save({"weight": torch.zeros(parameters)}, directory / "valid.cer_ctc.ave.pth")
    for set_name, hyps in hypotheses.items():
        score = directory / f"decode_{set_name}" / "score_cer"
        score.mkdir(parents=True)
        (score / "result.txt").write_text(sclite_result(hyps), encoding="utf-8")


def run(write_results, monkeypatch, tmp_path, systems, *options):
    for set_name in ("dev", "test"):
        data = tmp_path / "data" / set_name
        data.mkdir(parents=True, exist_ok=True)
        (data / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in UTT2SPK.items()))
    output = tmp_path / "RESULTS.md"
    monkeypatch.chdir(tmp_path)  # no manifest unless a test writes one
    monkeypatch.setattr(sys, "argv", ["write_results.py", "--exp", str(tmp_path / "exp"),
                                      "--systems", systems, "--output", str(output), *options])
    write_results.main()
    return output.read_text(encoding="utf-8")


SAME = {"dev": {"U1": "他是老师", "U2": "我们好"}, "test": {"U1": "他是老师", "U2": "我们好"}}


def test_rows_names_and_settings(write_results, monkeypatch, tmp_path):
    exp = tmp_path / "exp"
    # baseline: 1 error of 7 on dev (14.3%), 2 on test (28.6%)
    make_run(exp, "baseline", {"model": "espnet", "decoder": None},
             {"dev": {"U1": "她是老师", "U2": "我们好"}, "test": {"U1": "她是老诗", "U2": "我们好"}}, 7)
    make_run(exp, "gmot_relaxed", {"model": "gmot", "decoder": None, "model_conf": {"transfer_conf": {
        "gw_weight": 0.1, "marginals": "semi_relaxed", "frame_relaxation": 0.5}}}, SAME, 1234)
    make_run(exp, "hybrid_gmot", {"model": "gmot", "decoder": "transformer"}, SAME, 5)
    make_run(exp, "my_system", {"model": "espnet", "decoder": None}, SAME, 3)
    results = run(write_results, monkeypatch, tmp_path, "baseline gmot_relaxed hybrid_gmot my_system")
    assert table(results, "") == [
        "| Conformer-CTC (stock ESPnet) | 14.3 | 28.6 | 7 | 12 | - |",
        "| GM-OT with a semi-relaxed frame side | 0.0 | 0.0 | 1,234 | 12 | alpha 0.1, rho 0.5, "
        "eps 0.1, s 1.0, semi_relaxed marginals (frame 0.5) |",
        "| GM-OT on the hybrid CTC/attention model | 0.0 | 0.0 | 5 | 12 | alpha 0.02, rho 0.5, "
        "eps 0.1, s 1.0 |",
        # not in NAMES: labelled by its id
        "| my_system | 0.0 | 0.0 | 3 | 12 | - |",
    ]
    decode = yaml.safe_load((write_results.CONF / "decode_asr_hybrid.yaml").read_text())
    assert ("CTC-only systems: CTC greedy decoding (best path, "
            "espnet_gmot.bin.asr_inference_ctc_greedy) of the average of the best checkpoints "
            "by validation CER; hybrid systems: ESPnet's joint CTC/attention beam search "
            f"(beam {decode['beam_size']}, CTC weight {decode['ctc_weight']},") in results
    assert "by validation attention accuracy." in results
    assert "one seed (0)" in results and "CER of every seed" not in results
    # The hybrid system has no hybrid baseline here: it is compared with nothing.
    assert [row.split(" | ")[:2] for row in table(results, "## Differences")] == [
        ["| GM-OT with a semi-relaxed frame side", "Conformer-CTC (stock ESPnet)"],
        ["| my_system", "Conformer-CTC (stock ESPnet)"],
    ]


def test_transfer_setting_defaults_are_the_modules(write_results):
    """Keys a config leaves out read as the transfer module built without them has them."""
    from espnet_gmot.transfer.module import OTKnowledgeTransfer

    module = OTKnowledgeTransfer(4)
    expected = (f"alpha {module.gw_weight}, rho {module.temporal_weight}, "
                f"eps {module.epsilon}, s {module.fusion_scale}")
    assert write_results.transfer_setting({"model": "gmot"}) == expected
    assert write_results.transfer_setting({"model": "gmot", "model_conf": {"transfer_conf": {
        "marginals": "unbalanced", "frame_relaxation": 0.5, "token_relaxation": 2.0}}}) == (
        f"{expected}, unbalanced marginals (frame 0.5, token 2.0)")


def test_ctc_only_systems_have_no_hybrid_sentence(write_results, monkeypatch, tmp_path):
    make_run(tmp_path / "exp", "gmot", {"model": "gmot"}, SAME)
    results = run(write_results, monkeypatch, tmp_path, "gmot", "--inference", "espnet")
    assert "CTC-only systems: CTC decoding by ESPnet's espnet2.bin.asr_inference" in results
    assert "hybrid" not in results
    assert "| GM-OT | 0.0 | 0.0 | 2 | 12 | alpha 0.02, rho 0.5, eps 0.1, s 1.0 |" in results
    assert "## Differences" not in results  # no baseline to compare with


def test_seeds_intervals_and_homophones(write_results, monkeypatch, tmp_path):
    exp = tmp_path / "exp"
    # Test set, 7 characters. Baseline: seed 0 two errors (他->她 homophone, 们->门),
    # seed 1 one error (师->诗 homophone). GM-OT: none with seed 0, 们->门 with seed 1.
    # The control: 他->她 with both seeds.
    hyps = {
        ("baseline", 0): {"U1": "她是老师", "U2": "我门好"},
        ("baseline", 1): {"U1": "他是老诗", "U2": "我们好"},
        ("gmot", 0): {"U1": "他是老师", "U2": "我们好"},
        ("gmot", 1): {"U1": "他是老师", "U2": "我门好"},
        ("gmot_control", 0): {"U1": "她是老师", "U2": "我们好"},
        ("gmot_control", 1): {"U1": "她是老师", "U2": "我们好"},
    }
    for (system, seed), test_hyps in hyps.items():
        make_run(exp, system, {"model": "espnet" if system == "baseline" else "gmot"},
                 {"test": test_hyps}, seed=seed, seconds=10 + seed)
    write_homophone_manifest(tmp_path / "downloads" / "data_aishell" / "manifest.tsv")
    results = run(write_results, monkeypatch, tmp_path, "baseline gmot gmot_control",
                  "--seeds", "0 1", "--sets", "test")
    # CER per seed: baseline 28.6 / 14.3, GM-OT 0.0 / 14.3, control 14.3 / 14.3.
    assert table(results, "") == [
        "| Conformer-CTC (stock ESPnet) | 21.4 ± 10.1 | 2 | 10 | - |",
        "| GM-OT | 7.1 ± 10.1 | 2 | 10 | alpha 0.02, rho 0.5, eps 0.1, s 1.0 |",
        "| GM-OT with an untrained teacher (control) | 14.3 ± 0.0 | 2 | 10 | "
        "alpha 0.02, rho 0.5, eps 0.1, s 1.0 |",
    ]
    assert "mean ± sample standard deviation over 2 seeds (0, 1)" in results
    assert table(results, "## CER of every seed") == [
        "| Conformer-CTC (stock ESPnet) | 28.6 | 14.3 |",
        "| GM-OT | 0.0 | 14.3 |",
        "| GM-OT with an untrained teacher (control) | 14.3 | 14.3 |",
    ]
    # Seed-averaged errors per utterance: baseline U1 1.0, U2 0.5; GM-OT U1 0, U2 0.5;
    # control U1 1, U2 0. GM-OT - baseline: (0.5 - 1.5) / 7 = -14.3 points;
    # control - baseline: (1 - 1.5) / 7 = -7.1; GM-OT - control: (0.5 - 1) / 7 = -7.1.
    rows = table(results, "## Differences")
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| GM-OT", "Conformer-CTC (stock ESPnet)"],
        ["| GM-OT with an untrained teacher (control)", "Conformer-CTC (stock ESPnet)"],
        ["| GM-OT", "GM-OT with an untrained teacher (control)"],
    ]
    assert rows[0].split(" | ")[2].startswith("-14.3 (")
    assert rows[1].split(" | ")[2].startswith("-7.1 (")
    assert rows[2].split(" | ")[2].startswith("-7.1 (")
    # Homophone positions: 他 (ta1: 他 她) and 师 (shi1: 师 诗), 2 of 7.
    # Baseline: seed 0 one error there (她, a homophone) of 2 = 50%, the right syllable
    # at both and the wrong character at one (50%), elsewhere 1 of 5 (门) = 20%;
    # seed 1: 诗, a homophone: 50%, 50%, elsewhere 0%.
    assert table(results, "## Errors at homophone positions") == [
        "| Conformer-CTC (stock ESPnet) | test | 2 of 7 | 21.4 ± 10.1 | 50.0 ± 0.0 | 50.0 ± 0.0 "
        "| 50.0 ± 0.0 | 10.0 ± 14.1 |",
        "| GM-OT | test | 2 of 7 | 7.1 ± 10.1 | 0.0 ± 0.0 | 0.0 ± 0.0 | 0.0 ± 0.0 | 10.0 ± 14.1 |",
        "| GM-OT with an untrained teacher (control) | test | 2 of 7 | 14.3 ± 0.0 | 50.0 ± 0.0 "
        "| 50.0 ± 0.0 | 50.0 ± 0.0 | 0.0 ± 0.0 |",
    ]


def test_missing_score_names_the_file(write_results, monkeypatch, tmp_path):
    make_run(tmp_path / "exp", "gmot", {"model": "gmot"}, {"dev": SAME["dev"]})
    with pytest.raises(FileNotFoundError, match="asr_gmot_seed0/decode_test"):
        run(write_results, monkeypatch, tmp_path, "gmot")


def test_undefined_shares_are_a_dash(write_results):
    assert write_results.mean_and_deviation([20.0, float("nan")]) == "-"
    assert write_results.mean_and_deviation([float("nan")]) == "-"
    assert write_results.mean_and_deviation([20.0, 30.0]) == "25.0 ± 7.1"
