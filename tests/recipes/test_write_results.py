"""The demo's RESULTS.md writer (egs2/synth_mandarin/asr_gmot/local/write_results.py)
on a hand-made exp/ directory: rows, names, transfer settings and decoding sentence."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

SCRIPT = Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot" / "local" / "write_results.py"


@pytest.fixture(scope="module")
def write_results():
    spec = importlib.util.spec_from_file_location("write_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sclite_result(err: float) -> str:
    """The lines of an sclite result.txt that write_results reads."""
    return ("|  SPKR  |  # Snt  # Wrd  | Corr    Sub    Del    Ins    Err  S.Err |\n"
            f"| Sum/Avg|   10     120  | 90.0    8.0    2.0    1.0   {err:.2f}  50.0 |\n")


def make_system(exp: Path, system: str, config: dict, cers, parameters: int):
    directory = exp / f"asr_{system}"
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "train_seconds").write_text("12\n")
    torch.save({"weight": torch.zeros(parameters)}, directory / "valid.cer_ctc.ave.pth")
    for set_name, cer in cers.items():
        score = directory / f"decode_{set_name}" / "score_cer"
        score.mkdir(parents=True)
        (score / "result.txt").write_text(sclite_result(cer))


def run(write_results, monkeypatch, tmp_path, systems, *options):
    output = tmp_path / "RESULTS.md"
    monkeypatch.chdir(tmp_path)  # no corpus_stats.json here
    monkeypatch.setattr(sys, "argv", ["write_results.py", "--exp", str(tmp_path / "exp"),
                                      "--systems", systems, "--output", str(output), *options])
    write_results.main()
    return output.read_text(encoding="utf-8")


def test_rows_names_and_settings(write_results, monkeypatch, tmp_path):
    exp = tmp_path / "exp"
    make_system(exp, "baseline", {"model": "espnet", "decoder": None}, {"dev": 12.34, "test": 15.0}, 7)
    make_system(exp, "gmot_relaxed", {"model": "gmot", "decoder": None, "model_conf": {"transfer_conf": {
        "gw_weight": 0.1, "marginals": "semi_relaxed", "frame_relaxation": 0.5}}},
        {"dev": 10.0, "test": 11.06}, 1234)
    make_system(exp, "hybrid_gmot", {"model": "gmot", "decoder": "transformer"},
                {"dev": 9.0, "test": 9.5}, 5)
    make_system(exp, "my_system", {"model": "espnet", "decoder": None}, {"dev": 1.0, "test": 2.0}, 3)
    results = run(write_results, monkeypatch, tmp_path, "baseline gmot_relaxed hybrid_gmot my_system")
    rows = [line for line in results.splitlines() if line.startswith("| ")][1:]
    assert rows == [
        "| Conformer-CTC (stock ESPnet) | 12.3 | 15.0 | 7 | 12 | - |",
        "| GM-OT with a semi-relaxed frame side | 10.0 | 11.1 | 1,234 | 12 | alpha 0.1, rho 0.5, "
        "eps 0.1, s 1.0, semi_relaxed marginals (frame 0.5) |",
        "| GM-OT on the hybrid CTC/attention model | 9.0 | 9.5 | 5 | 12 | alpha 0.02, rho 0.5, "
        "eps 0.1, s 1.0 |",
        # not in NAMES: labelled by its id
        "| my_system | 1.0 | 2.0 | 3 | 12 | - |",
    ]
    decode = yaml.safe_load((write_results.CONF / "decode_asr_hybrid.yaml").read_text())
    assert ("CTC-only systems: CTC greedy decoding (best path, "
            "espnet_gmot.bin.asr_inference_ctc_greedy) of the average of the best checkpoints "
            "by validation CER; hybrid systems: ESPnet's joint CTC/attention beam search "
            f"(beam {decode['beam_size']}, CTC weight {decode['ctc_weight']},") in results
    assert "by validation attention accuracy." in results


def test_ctc_only_systems_have_no_hybrid_sentence(write_results, monkeypatch, tmp_path):
    make_system(tmp_path / "exp", "gmot", {"model": "gmot"}, {"dev": 3.0, "test": 4.0}, 2)
    results = run(write_results, monkeypatch, tmp_path, "gmot", "--inference", "espnet")
    assert "CTC-only systems: CTC decoding by ESPnet's espnet2.bin.asr_inference" in results
    assert "hybrid" not in results
    assert "| GM-OT | 3.0 | 4.0 | 2 | 12 | alpha 0.02, rho 0.5, eps 0.1, s 1.0 |" in results


def test_missing_score_names_the_file(write_results, monkeypatch, tmp_path):
    make_system(tmp_path / "exp", "gmot", {"model": "gmot"}, {"dev": 3.0}, 2)
    with pytest.raises(FileNotFoundError, match="decode_test"):
        run(write_results, monkeypatch, tmp_path, "gmot")
