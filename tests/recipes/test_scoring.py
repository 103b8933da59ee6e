"""Stage 9's statistics (egs2/synth_mandarin/asr_gmot/local/scoring.py and runs.py):
sclite's alignments, homophone-position errors, the paired bootstrap interval and
ESPnet's epoch statistics, on hand-made cases checked by hand."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

LOCAL_DIR = Path(__file__).resolve().parents[2] / "egs2" / "synth_mandarin" / "asr_gmot" / "local"
sys.path.insert(0, str(LOCAL_DIR))

import runs  # noqa: E402
import scoring  # noqa: E402

PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
SCLITE = shutil.which("sclite", path=PATH)

# A hand-made pair. Reference 他是我的老师 (ta1 shi4 wo3 de5 lao3 shi1),
# hypothesis 她是我得老: 他 -> 她 and 的 -> 得 are homophone substitutions,
# 师 is deleted. Second utterance 我们好 (wo3 men5 hao3) -> 我门好人:
# 们 -> 门 (men2, not the same toned syllable) and an insertion.
HOMOPHONES = {"ta1": {"他", "她"}, "shi4": {"是", "事"}, "de5": {"的", "得"},
              "shi1": {"师", "诗"}, "wo3": {"我"}, "lao3": {"老"}, "men5": {"们"},
              "men2": {"门"}, "hao3": {"好"}}
SYLLABLES = {"U1": "ta1 shi4 wo3 de5 lao3 shi1".split(), "U2": "wo3 men5 hao3".split()}
ALIGNMENTS = {
    "U1": [("他", "她"), ("是", "是"), ("我", "我"), ("的", "得"), ("老", "老"), ("师", None)],
    "U2": [("我", "我"), ("们", "门"), ("好", "好"), (None, "人")],
}


def test_homophone_positions_of_a_hand_made_pair():
    score = scoring.homophone_scores(ALIGNMENTS, SYLLABLES, HOMOPHONES)
    # Homophone positions: 他 是 的 师 (their syllables have two characters each).
    assert score.positions == 4
    # Errors there: 他->她, 的->得 (by homophones) and the deleted 师.
    assert (score.errors, score.homophone_substitutions) == (3, 2)
    assert (score.error_pct, score.homophone_substitution_pct) == (75.0, 50.0)
    # The right syllable at 他 (as 她), 是 and 的 (as 得): the wrong character at 2 of 3.
    assert score.homophone_choice_error_pct == pytest.approx(200 / 3)
    # Other positions: 我 老 我 们 好, one error (们->门); the insertion counts nowhere.
    assert (score.other_positions, score.other_errors) == (5, 1)
    assert score.other_error_pct == 20.0


def test_homophone_scores_per_utterance_add_up():
    per_utterance = scoring.utterance_homophone_scores(ALIGNMENTS, SYLLABLES, HOMOPHONES)
    # U1: positions 他 是 的 师, errors 他 的 师 (two by homophones), others 我 老;
    # U2: no homophone position, 们->门 among its 3 others.
    assert per_utterance == {"U1": scoring.HomophoneScore(4, 3, 2, 2, 0),
                             "U2": scoring.HomophoneScore(0, 0, 0, 3, 1)}
    assert (per_utterance["U1"].right_syllable, per_utterance["U2"].right_syllable) == (3, 0)
    assert per_utterance["U1"] + per_utterance["U2"] == scoring.homophone_scores(
        ALIGNMENTS, SYLLABLES, HOMOPHONES)


def test_homophone_scoring_names_an_utterance_the_manifest_does_not_match():
    with pytest.raises(ValueError, match="utterance U2: 3 reference characters but 2 syllables"):
        scoring.homophone_scores(ALIGNMENTS, {**SYLLABLES, "U2": ["wo3", "men5"]}, HOMOPHONES)


def test_utterance_errors_count_like_sclite():
    assert scoring.utterance_errors(ALIGNMENTS["U1"]) == (3, 6)
    assert scoring.utterance_errors(ALIGNMENTS["U2"]) == (2, 3)


@pytest.mark.skipif(SCLITE is None, reason="needs sclite (tools/install.sh links it)")
def test_sclite_alignments_round_trip(tmp_path):
    """The hand-made pair through the real sclite: its alignment is the one above
    and its Sum/Avg CER is what the per-utterance counts give."""
    utt2spk = {"BAC009S0001W0001": "S0001", "BAC009S0002W0002": "S0002"}
    texts = {"BAC009S0001W0001": ("他是我的老师", "她是我得老"),
             "BAC009S0002W0002": ("我们好", "我门好人")}
    # The trn files as stage 8 writes them, through the same command.
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk.items()), encoding="utf-8")
    for side, index in (("ref", 0), ("hyp", 1)):
        (tmp_path / f"{side}.text").write_text(
            "".join(f"{utt} {pair[index]}\n" for utt, pair in texts.items()), encoding="utf-8")
        with (tmp_path / f"{side}.trn").open("w", encoding="utf-8") as trn:
            subprocess.run([sys.executable, str(LOCAL_DIR / "scoring.py"), "trn", str(tmp_path / f"{side}.text"),
                            str(tmp_path / "utt2spk")], stdout=trn, check=True)
    assert (tmp_path / "ref.trn").read_text(encoding="utf-8").splitlines()[0] == \
        "他 是 我 的 老 师 (S0001-BAC009S0001W0001)"
    result = tmp_path / "result.txt"
    with result.open("w") as out:
        subprocess.run([SCLITE, "-r", str(tmp_path / "ref.trn"), "trn", "-h", str(tmp_path / "hyp.trn"),
                        "trn", "-i", "rm", "-o", "all", "stdout"], stdout=out, check=True)
    alignments = scoring.read_sclite_alignments(result, utt2spk)
    assert alignments == {"BAC009S0001W0001": ALIGNMENTS["U1"], "BAC009S0002W0002": ALIGNMENTS["U2"]}
    errors, length = np.sum([scoring.utterance_errors(a) for a in alignments.values()], axis=0)
    assert (errors, length) == (5, 9)
    assert scoring.sclite_error(result) == round(100 * 5 / 9, 1)
    # An utterance sclite did not see is named.
    with pytest.raises(ValueError, match="no alignment for 1 utterance.*BAC009S0003W0001"):
        scoring.read_sclite_alignments(result, {**utt2spk, "BAC009S0003W0001": "S0003"})


def test_sclite_alignment_of_an_unknown_utterance_is_named(tmp_path):
    result = tmp_path / "result.txt"
    result.write_text("id: (s9-u9)\nScores: (#C #S #D #I) 1 0 0 0\nREF:  他 \nHYP:  他 \n")
    with pytest.raises(ValueError, match=r"result.txt:1: utterance 's9-u9' is not in"):
        scoring.read_sclite_alignments(result, {"U1": "S1"})


def test_paired_bootstrap_hand_checked():
    """Two utterances: u1 has 4 reference characters and the system makes 2 errors
    fewer there; u2 has 2 characters and both systems make 1 error. A resample
    of two utterances is {u1,u1} (probability 1/4, difference -4/8 = -50 points),
    {u1,u2} (1/2, -2/6 = -33.3) or {u2,u2} (1/4, 0/4 = 0). The 2.5% and 97.5%
    quantiles of that distribution are its extremes, -50 and 0; the estimate is
    the full set's -2/6."""
    delta, low, high = scoring.paired_bootstrap([0, 1], [2, 1], [4, 2], num_samples=20000)
    assert delta == pytest.approx(-100 * 2 / 6)
    assert (low, high) == (-50.0, 0.0)
    # The middle of the distribution: half the resamples are {u1,u2}.
    _, low, high = scoring.paired_bootstrap([0, 1], [2, 1], [4, 2], num_samples=20000,
                                            confidence=0.4)
    assert low == high == pytest.approx(-100 * 2 / 6)


def test_paired_bootstrap_of_a_uniform_gain_has_no_width():
    # One error fewer per 5 characters in every utterance: every resample gives -20.
    delta, low, high = scoring.paired_bootstrap([1, 2, 3], [2, 4, 6], [5, 10, 15], num_samples=500)
    assert delta == low == high == pytest.approx(-20.0)


def test_paired_bootstrap_is_paired():
    """The systems differ by one error on one utterance of 100 out of 1000 characters
    (0.1 points) while both vary a lot between utterances: a paired interval stays
    within [0, 0.4]; an unpaired one would be tens of points wide."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 15, size=100)
    baseline = rng.integers(0, 5, size=100)
    system = baseline.copy()
    system[0] += 1
    delta, low, high = scoring.paired_bootstrap(system, baseline, lengths, num_samples=2000)
    assert delta == pytest.approx(100 / lengths.sum())
    assert 0.0 <= low <= delta <= high < 0.4


def test_paired_bootstrap_of_a_ratio_hand_checked():
    """Shares whose denominators differ by system: u1 has 2 wrong of 4 for the
    system and 3 of 3 for the reference, u2 1 of 1 and 1 of 2. Resamples {u1,u1}
    (probability 1/4): 4/8 - 6/6 = -50 points; {u1,u2} (1/2): 3/5 - 4/5 = -20;
    {u2,u2} (1/4): 2/2 - 2/4 = +50. The estimate is the full set's -20."""
    delta, low, high = scoring.paired_bootstrap_ratio([2, 1], [4, 1], [3, 1], [3, 2],
                                                      num_samples=20000)
    assert delta == pytest.approx(-20.0)
    assert (low, high) == pytest.approx((-50.0, 50.0))
    # Equal denominators: the CER bootstrap, the same resamples.
    assert scoring.paired_bootstrap_ratio([0, 1], [4, 2], [2, 1], [4, 2], num_samples=500) == \
        scoring.paired_bootstrap([0, 1], [2, 1], [4, 2], num_samples=500)


def test_paired_bootstrap_of_a_ratio_drops_resamples_without_a_total():
    """u2 has no position for either system: {u2,u2} has no share and is dropped;
    the others all give 0/2 - 2/2 = -100."""
    assert scoring.paired_bootstrap_ratio([0, 0], [2, 0], [2, 0], [2, 0], num_samples=400) == (
        -100.0, -100.0, -100.0)
    with pytest.raises(ValueError, match="a system's totals sum to 0"):
        scoring.paired_bootstrap_ratio([0, 0], [0, 0], [1, 0], [1, 1])


def test_paired_bootstrap_rejects_unpaired_input():
    with pytest.raises(ValueError, match="one count and one total per utterance"):
        scoring.paired_bootstrap([1, 2], [1, 2, 3], [4, 4, 4])
    with pytest.raises(ValueError, match="confidence must lie in"):
        scoring.paired_bootstrap([1], [1], [4], confidence=95)


def test_last_epoch_stats_reads_espnet_epoch_results(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "[vm] 2026-11-21 22:34:07,983 (trainer:394) INFO: 1epoch results: [train] loss=21.1, "
        "time=54.83 seconds, total_count=193, [valid] loss_ctc=41.364, cer_ctc=0.868, acc=nan, "
        "ot_entropy=0.686, time=0.9 seconds, total_count=28\n"
        "[vm] 2026-11-21 22:35:07,983 (trainer:394) INFO: 2epoch results: [train] loss=9.5, "
        "total_count=386, [valid] loss_ctc=7.054, cer_ctc=0.259, acc=nan, ot_entropy=0.682, "
        "ot_marginal_error=2.702e-07, time=0.89 seconds, total_count=56\n")
    stats = runs.last_epoch_stats(log)
    assert stats["cer_ctc"] == 0.259 and stats["ot_entropy"] == 0.682
    assert stats["ot_marginal_error"] == 2.702e-07 and np.isnan(stats["acc"])
    assert "time" not in stats
    assert runs.last_epoch_stats(log, "train")["loss"] == 9.5
    log.write_text("no results yet\n")
    with pytest.raises(ValueError, match="no 'epoch results' line"):
        runs.last_epoch_stats(log)


def test_run_dir_naming(tmp_path):
    assert runs.run_dir(tmp_path, "gmot", 2) == tmp_path / "asr_gmot_seed2"
    assert runs.run_dir(tmp_path, "gmot", "0", "gw_weight-0.1") == tmp_path / "asr_gmot_gw_weight-0.1_seed0"


def test_run_sh_names_its_runs_through_runs_py():
    """run.sh's own functions, run by bash: systems outer, seeds inner, the tag
    in the name, as local/runs.py says."""
    script = (LOCAL_DIR.parent / "run.sh").read_text()
    functions = script[script.index("run_dir() {"):script.index("train_systems() {")]
    for tag in ("", "gw_weight-0.1"):
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\ntag='{tag}' systems='baseline gmot' seeds='0 3' "
                           f"python='{sys.executable}'\n{functions}runs\nrun_dir gmot 3"],
            cwd=LOCAL_DIR.parent, capture_output=True, text=True, check=True)
        expected = [runs.run_dir(Path("exp"), system, seed, tag)
                    for system, seed in (("baseline", 0), ("baseline", 3), ("gmot", 0), ("gmot", 3), ("gmot", 3))]
        assert done.stdout.split() == [str(path) for path in expected]


def test_trn_of_an_utterance_without_speaker_is_named(tmp_path):
    (tmp_path / "text").write_text("U1 他是\nU2 我们\n", encoding="utf-8")
    (tmp_path / "utt2spk").write_text("U1 S1\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(LOCAL_DIR / "scoring.py"), "trn", str(tmp_path / "text"),
                           str(tmp_path / "utt2spk")], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert f"{tmp_path / 'text'}: utterance U2 is not in {tmp_path / 'utt2spk'}" in done.stderr
    assert list(scoring.trn_lines({"U1": "他 是"}, {"U1": "S1"})) == ["他 是 (S1-U1)"]
