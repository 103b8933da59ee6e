"""Where run.sh puts a training run, and what its logs say (shared by run.sh,
stage 9 and the sweep).

Run as a script it prints the run directories of ``--systems`` x ``--seeds``
(systems outer, seeds inner), one per line: run.sh's names come from here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence


def run_dir(exp: Path, system: str, seed: int | str, tag: str = "") -> Path:
    """``exp/asr_<system>[_<tag>]_seed<seed>``."""
    return Path(exp) / f"asr_{system}{'_' + tag if tag else ''}_seed{seed}"


_EPOCH_RESULTS = re.compile(r"(\d+)epoch results: (.*)$")
_SECTION = re.compile(r"\[(train|valid)\] (.*?)(?=, \[(?:train|valid)\]|$)")


def last_epoch_stats(train_log: Path, section: str = "valid") -> dict[str, float]:
    """The ``[valid]`` (or ``[train]``) statistics of the last epoch that ESPnet's
    trainer logged in ``train_log`` ("4epoch results: [train] loss=..., [valid] ...")."""
    last = None
    for line in Path(train_log).read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EPOCH_RESULTS.search(line)
        if match:
            last = match.group(2)
    if last is None:
        raise ValueError(f"{train_log}: no 'epoch results' line; did the training finish?")
    for name, body in _SECTION.findall(last):
        if name == section:
            stats = {}
            for item in body.split(", "):
                key, _, value = item.partition("=")
                try:
                    stats[key.strip()] = float(value)
                except ValueError:
                    continue  # "time=54.83 seconds" and the like
            return stats
    raise ValueError(f"{train_log}: the last epoch results have no [{section}] section")


def embed_section(text: str, heading: str, section: str, before: str = "## Corpus") -> str:
    """Markdown ``text`` with its section under ``heading`` (a ``## `` line, up to the
    next ``## `` heading) replaced by ``section``; without one, ``section`` goes in
    before the ``before`` heading, or at the end."""
    lines = text.splitlines()
    new = section.rstrip("\n").splitlines()
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = lines.index(before) if before in lines else len(lines)
        if start == len(lines) and lines and lines[-1] != "":
            new = [""] + new
    if end < len(lines):
        new.append("")
    return "\n".join(lines[:start] + new + lines[end:]) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the run directories of systems x seeds.")
    parser.add_argument("--exp", type=Path, default=Path("exp"))
    parser.add_argument("--systems", required=True, help="space-separated system names")
    parser.add_argument("--seeds", required=True, help="space-separated seeds")
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    for system in args.systems.split():
        for seed in args.seeds.split():
            print(run_dir(args.exp, system, seed, args.tag))


if __name__ == "__main__":
    sys.exit(main())
