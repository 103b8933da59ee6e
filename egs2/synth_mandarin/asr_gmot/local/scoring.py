"""What stage 8 gives sclite, what stage 9 reads from it, and the statistics it
adds to sclite's CER.

* :func:`trn_lines` (``python local/scoring.py trn TEXT UTT2SPK``, stage 8):
  a Kaldi ``text`` as sclite's char-level trn, each line ending in its id
  ``(<speaker>-<utterance>)`` (:func:`trn_id`);
* :func:`sclite_error` and :func:`read_sclite_alignments` read sclite's
  ``-o all`` report (run.sh stage 8): the corpus CER, and each utterance's
  alignment of reference and hypothesis characters (sclite's own, so every
  figure here agrees with its CER);
* :func:`homophone_scores`: errors at the reference characters whose toned
  syllable other characters of the corpus share (the audio cannot tell them
  apart; only linguistic context can), with substitutions by a homophone
  counted apart;
* :func:`paired_bootstrap`: a confidence interval of the CER difference of
  two systems decoded on the same utterances, by resampling utterances
  (Koehn 2004, "Statistical significance tests for machine translation
  evaluation"; Bisani and Ney 2004 for speech recognition).
"""

from __future__ import annotations

import re
import sys
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

# One aligned position: (reference character, hypothesis character); None on
# the side sclite writes as "***" (an insertion has no reference character,
# a deletion no hypothesis character).
Pair = tuple[str | None, str | None]


def trn_id(utt: str, speaker: str) -> str:
    """The id of an utterance in a trn file: sclite groups by the part before
    the first '-' (the speaker) and lower-cases it in its report."""
    return f"{speaker}-{utt}"


def trn_lines(text: Mapping[str, str], utt2spk: Mapping[str, str],
              names: tuple[str, str] = ("text", "utt2spk")) -> Iterator[str]:
    """``"他 是 老 师 (spk-utt)"`` per utterance of ``text``: characters split
    by spaces, the transcript's own spaces dropped (character error rate).
    ``names`` name the two inputs in errors."""
    for utt, transcript in text.items():
        if utt not in utt2spk:
            raise ValueError(f"{names[0]}: utterance {utt} is not in {names[1]}")
        yield " ".join(transcript.replace(" ", "")) + f" ({trn_id(utt, utt2spk[utt])})"


def sclite_error(result: Path) -> float:
    """The 'Err' percentage of sclite's Sum/Avg line."""
    for line in Path(result).read_text(encoding="utf-8", errors="replace").splitlines():
        if "Sum/Avg" in line:
            fields = [f for f in re.split(r"[|\s]+", line) if f]
            # | Sum/Avg | #Snt #Wrd | Corr Sub Del Ins Err S.Err |
            return float(fields[7])
    raise ValueError(f"{result}: no Sum/Avg line; did sclite run?")


def read_sclite_alignments(result: Path, utt2spk: Mapping[str, str]) -> dict[str, list[Pair]]:
    """Each utterance's alignment from the "DUMP OF SYSTEM ALIGNMENT STRUCTURE"
    of sclite's report, keyed by utterance id.

    The trn ids were :func:`trn_id`'s, which sclite lower-cases;
    ``utt2spk`` maps them back. Every utterance of ``utt2spk`` must be there.
    """
    by_trn_id = {trn_id(utt, spk).lower(): utt for utt, spk in utt2spk.items()}
    alignments: dict[str, list[Pair]] = {}
    lines = Path(result).read_text(encoding="utf-8", errors="replace").splitlines()
    utt = None
    ref: list[str] | None = None
    for number, line in enumerate(lines, 1):
        if line.startswith("id: ("):
            line_id = line[len("id: ("):].rstrip().rstrip(")")
            if line_id not in by_trn_id:
                raise ValueError(f"{result}:{number}: utterance '{line_id}' is not in the set's utt2spk")
            utt = by_trn_id[line_id]
        elif line.startswith("REF:"):
            ref = line[4:].split()
        elif line.startswith("HYP:"):
            hyp = line[4:].split()
            if utt is None or ref is None or len(ref) != len(hyp):
                raise ValueError(f"{result}:{number}: HYP line without its id and REF lines")
            alignments[utt] = [(None if r == "***" else r, None if h == "***" else h)
                               for r, h in zip(ref, hyp)]
            utt = ref = None
    missing = sorted(set(utt2spk) - set(alignments))
    if missing:
        raise ValueError(f"{result}: no alignment for {len(missing)} utterance(s), e.g. {missing[0]}; "
                         "was sclite run with -o all (or pra)?")
    return alignments


def utterance_errors(pairs: Sequence[Pair]) -> tuple[int, int]:
    """``(errors, reference length)`` of one alignment: substitutions, deletions
    and insertions, as sclite counts them."""
    errors = sum(r != h for r, h in pairs)
    return errors, sum(r is not None for r, _ in pairs)


@dataclass(frozen=True)
class HomophoneScore:
    """Errors at homophone positions and elsewhere (insertions belong to no
    reference position and are counted in neither)."""

    positions: int                 # reference characters whose syllable has several characters
    errors: int                    # of those: substituted or deleted
    homophone_substitutions: int   # of those errors: replaced by another character of the syllable
    other_positions: int
    other_errors: int

    @staticmethod
    def percent(count: int, total: int) -> float:
        return 100.0 * count / total if total else float("nan")

    @property
    def error_pct(self) -> float:
        return self.percent(self.errors, self.positions)

    @property
    def homophone_substitution_pct(self) -> float:
        return self.percent(self.homophone_substitutions, self.positions)

    @property
    def homophone_choice_error_pct(self) -> float:
        """Of the homophone positions where the hypothesis has the right syllable
        (the right character or another of its syllable), the share with the
        wrong character: what only context decides, whatever the acoustics got."""
        return self.percent(self.homophone_substitutions, self.right_syllable)

    @property
    def other_error_pct(self) -> float:
        return self.percent(self.other_errors, self.other_positions)

    def __add__(self, other: "HomophoneScore") -> "HomophoneScore":
        return HomophoneScore(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def right_syllable(self) -> int:
        """Homophone positions whose hypothesis has the right syllable (the right
        character or another of its syllable)."""
        return self.positions - self.errors + self.homophone_substitutions


def utterance_homophone_scores(
    alignments: Mapping[str, Sequence[Pair]],
    syllables: Mapping[str, Sequence[str]],
    homophones: Mapping[str, set[str]],
) -> dict[str, HomophoneScore]:
    """Score the reference characters of every aligned utterance by whether
    their syllable (``syllables[utt]``, one per reference character) is shared
    by several characters of ``homophones`` (syllable -> characters); one score
    per utterance."""
    scores = {}
    for utt, pairs in alignments.items():
        aligned = [(r, h) for r, h in pairs if r is not None]
        if utt not in syllables or len(syllables[utt]) != len(aligned):
            raise ValueError(f"utterance {utt}: {len(aligned)} reference characters but "
                             f"{len(syllables.get(utt, ()))} syllables in the corpus manifest; "
                             "is the manifest the one this data was prepared from?")
        positions = errors = by_homophone = other_positions = other_errors = 0
        for (ref, hyp), syllable in zip(aligned, syllables[utt]):
            shared = homophones.get(syllable, {ref})
            if len(shared) > 1:
                positions += 1
                errors += hyp != ref
                by_homophone += hyp is not None and hyp != ref and hyp in shared
            else:
                other_positions += 1
                other_errors += hyp != ref
        scores[utt] = HomophoneScore(positions, errors, by_homophone, other_positions, other_errors)
    return scores


def homophone_scores(
    alignments: Mapping[str, Sequence[Pair]],
    syllables: Mapping[str, Sequence[str]],
    homophones: Mapping[str, set[str]],
) -> HomophoneScore:
    """:func:`utterance_homophone_scores` summed over the utterances."""
    return sum(utterance_homophone_scores(alignments, syllables, homophones).values(),
               HomophoneScore(0, 0, 0, 0, 0))


def paired_bootstrap(
    system_errors: Sequence[float],
    baseline_errors: Sequence[float],
    ref_lengths: Sequence[int],
    num_samples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """CER difference (system - baseline, in points) and its percentile bootstrap
    interval over utterances: :func:`paired_bootstrap_ratio` with the reference
    lengths as both systems' denominators, ``100 (sum e_sys - sum e_base) / sum n``.
    Errors may be averages over seeds. Returns ``(difference, low, high)``."""
    return paired_bootstrap_ratio(system_errors, ref_lengths, baseline_errors, ref_lengths,
                                  num_samples, confidence, seed)


def paired_bootstrap_ratio(
    system_counts: Sequence[float],
    system_totals: Sequence[float],
    baseline_counts: Sequence[float],
    baseline_totals: Sequence[float],
    num_samples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Difference of two corpus-level percentages, ``100 (sum c_sys / sum t_sys -
    sum c_base / sum t_base)``, and its percentile bootstrap interval over utterances.

    One count and one total per utterance and system (e.g. wrong homophones of
    the positions with the right syllable, whose number depends on the
    hypothesis); each resample draws as many utterances as there are, with
    replacement, the same ones for both systems (paired). A resample whose
    totals are 0 for a system has no percentage and is dropped. Returns
    ``(difference, low, high)``.
    """
    arrays = [np.asarray(a, dtype=np.float64)
              for a in (system_counts, system_totals, baseline_counts, baseline_totals)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or arrays[0].size == 0:
        raise ValueError("a paired bootstrap needs one count and one total per utterance for both "
                         f"systems; got shapes {', '.join(str(a.shape) for a in arrays)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if any(a.sum() <= 0 for a in arrays[1::2]):
        raise ValueError("a system's totals sum to 0: there is no percentage to compare")
    ours, our_totals, theirs, their_totals = arrays

    def difference(index):  # the percentage difference on resamples of utterances
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * (ours[index].sum(-1) / our_totals[index].sum(-1)
                            - theirs[index].sum(-1) / their_totals[index].sum(-1))

    estimate = float(difference(np.arange(ours.size)))
    rng = np.random.default_rng(seed)
    samples = np.empty(num_samples)
    chunk = max(1, 2_000_000 // ours.size)  # bounded memory on large sets
    for start in range(0, num_samples, chunk):
        stop = min(num_samples, start + chunk)
        samples[start:stop] = difference(rng.integers(0, ours.size, size=(stop - start, ours.size)))
    samples = samples[np.isfinite(samples)]  # at most (1 - 1/n)^n < 37% of them
    low, high = np.quantile(samples, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return estimate, float(low), float(high)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "trn":
        print("usage: python local/scoring.py trn TEXT UTT2SPK  (writes the trn to stdout)", file=sys.stderr)
        return 2
    from espnet_gmot.kaldi_data import read_kaldi_map, read_text

    text_path, utt2spk_path = args[1:]
    try:  # every line checked before the first is written
        lines = list(trn_lines(read_text(text_path), read_kaldi_map(utt2spk_path), (text_path, utt2spk_path)))
    except ValueError as error:  # DataDirError included
        print(f"scoring.py trn: {error}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
