"""Hand-made sclite reports for the demo's report scripts (write_results.py,
teacher_axis.py): two utterances, substitution-only hypotheses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "egs2" / "synth_mandarin" / "asr_gmot" / "local"))

from corpus_common import ManifestRow, write_manifest  # noqa: E402

UTT2SPK = {"U1": "S1", "U2": "S2"}
REFERENCES = {"U1": "他是老师", "U2": "我们好"}
PINYIN = {"U1": "ta1 shi4 lao3 shi1", "U2": "wo3 men5 hao3"}


def sclite_result(hypotheses: dict) -> str:
    """An sclite report of substitution-only hypotheses (same length as the
    references): the Sum/Avg line and the alignment dump write_results reads."""
    errors = sum(r != h for utt, hyp in hypotheses.items() for r, h in zip(REFERENCES[utt], hyp))
    characters = sum(len(r) for r in REFERENCES.values())
    err = 100.0 * errors / characters
    lines = ["|  SPKR  |  # Snt  # Wrd  | Corr    Sub    Del    Ins    Err  S.Err |",
             f"| Sum/Avg|    2     {characters}  | 90.0    8.0    2.0    1.0   {err:.1f}  50.0 |"]
    for utt, hyp in hypotheses.items():
        lines += [f"id: ({UTT2SPK[utt].lower()}-{utt.lower()})", "Scores: (#C #S #D #I) 0 0 0 0",
                  "REF:  " + " ".join(REFERENCES[utt]), "HYP:  " + " ".join(hyp), ""]
    return "\n".join(lines) + "\n"


def table(results: str, heading: str) -> list[str]:
    """The rows of the table under ``heading`` (the first table for "")."""
    text = results[results.index(heading):] if heading else results
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append(line)
    return rows


def write_homophone_manifest(path: Path) -> None:
    """The corpus manifest of the two utterances and a train sentence that adds 她
    (ta1) and 诗 (shi1): 他 and 师 become homophone positions; 是 老 我 们 好 have
    their syllables to themselves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(path, [
        ManifestRow(utt, "test", UTT2SPK[utt], "x", 1, REFERENCES[utt], REFERENCES[utt],
                    PINYIN[utt], "wav/x.wav", 1.0) for utt in REFERENCES
    ] + [ManifestRow("T1", "train", "S9", "y", 1, "她写诗", "她 写 诗", "ta1 xie3 shi1",
                     "wav/y.wav", 1.0)])
