#!/usr/bin/env python3
"""Build a wheelhouse of exactly what an air-gapped node lacks to run ESPnet and the plugin.

    python tools/build_wheelhouse.py --output wheelhouse --python-version 3.12 \\
        --present tools/wheelhouse/h200_present.txt --espnet 202511 202611

For each ESPnet release asked for, it resolves ESPnet and this package (the
release's tested constraints, ``tools/constraints*.txt``) with a Python of the
target's version on this machine, drops what the node already has (``--present``:
one package a line, ``name`` or ``name==version``; ``name==version`` lines also
pin the resolution, so the closure is made for the node's torch), and puts the
rest into ``--output``: binary wheels for the target's Python and platform tags,
wheels built here from packages published only as sources, and this package's
own wheel. ``--also`` adds requirements (the test suite's ``editdistance``, for
the GPU check). ``--skip`` leaves out packages of the closure that nothing the node
runs imports (the GPU check skips espnet 202611's av, a large wheel, and kernels
and pyworld: see tools/gpu_check.sh). ``<output>/espnet<release>-py<version>.txt``
lists one set's ``name==version`` lines, and ``espnet<release>-py<version>.node.txt``
what it relies on the node for (what a stand-in for the node needs). On the
node, with no network::

    python3 -m pip install --no-index --no-deps --find-links wheelhouse \\
        --target /tmp/gmot_site -r wheelhouse/espnet202511-py312.txt
    export PYTHONPATH=/tmp/gmot_site

``--target`` leaves the node's own packages (its torch above all) untouched;
``--no-deps`` because the node's packages are not pip's to check. Several sets
share one folder (a wheel two sets need is stored once) and install separately.

A Python of the target's version must exist here (``--python``, else
``python3.X`` on PATH or under pyenv): it resolves environment markers and builds
the wheels of source-only packages as the node's Python would.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = {
    "202511": REPO / "tools" / "constraints.txt",
    "202611": REPO / "tools" / "constraints-espnet202611.txt",
}
# manylinux tags a current x86-64 Linux node accepts (glibc 2.28 and older),
# and plain linux_x86_64 for the wheels built here from sources.
DEFAULT_PLATFORMS = (
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
    "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64",
)
PROJECT = "espnet-gmot"


class WheelhouseError(Exception):
    """A step failed; the message names it and what to do."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_present(path: Path) -> Tuple[set, List[str]]:
    """``(names the node has, name==version pins)`` from a ``--present`` file."""
    names, pins = set(), []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(==\s*[^\s=]+)?", line)
        if match is None:
            raise WheelhouseError(
                f"--present {path}, line {number}: {raw!r} is neither `name` nor `name==version`")
        names.add(canonical(match[1]))
        if match[2]:
            pins.append(match[1] + match[2].replace(" ", ""))
    return names, pins


def find_python(version: str) -> str:
    """A Python ``version`` (e.g. ``3.12``) on PATH or under pyenv."""
    candidates = [f"python{version}"]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob(f"versions/{version}*/bin/python3"))
    for candidate in candidates:
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    raise WheelhouseError(
        f"no Python {version} found (python{version} on PATH or under pyenv): "
        f"give --python /path/to/python{version}")


def run(cmd: Sequence, what: str, **kwargs) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise WheelhouseError(f"{what} failed ({proc.returncode}): {' '.join(map(str, cmd))[:500]}\n"
                              f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def project_version() -> str:
    match = re.search(r'^\s*version="([^"]+)"', (REPO / "setup.py").read_text(), re.M)
    if match is None:
        raise WheelhouseError("setup.py names no version=\"...\"")
    return match[1]


def resolve(python: str, release: str, present: set, pins: List[str], work: Path,
            also: Sequence[str] = ()) -> List[dict]:
    """What pip installs for ``espnet==release`` and this package on ``python``.

    The release's tested constraints apply to what the node lacks; what it has
    keeps its pins (the closure must fit the node's own packages)."""
    venv = work / f"resolve{release}"
    run([python, "-m", "venv", venv], "creating the resolving venv")
    pip = [venv / "bin" / "python", "-m", "pip"]
    run([*pip, "install", "-q", "pip<26"], "pip<26 (pip 26 refuses espnet's ci_sdr)")
    constraints = work / f"constraints{release}.txt"
    tested = [
        line for line in CONSTRAINTS[release].read_text().splitlines()
        if line.strip() and not line.startswith("#")
        and canonical(re.split(r"[=<>!~;\s]", line, maxsplit=1)[0]) not in present
    ]
    constraints.write_text("".join(f"{line}\n" for line in [*tested, *pins]))
    report = work / f"report{release}.json"
    run([*pip, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report,
         "-c", constraints, f"espnet=={release}", REPO, *also],
        f"resolving espnet {release} and {PROJECT} (a conflict with --present's pins is "
        "named above)")
    return json.loads(report.read_text())["install"]


def build(output: Path, python_version: str, python: str, releases: Sequence[str],
          present_file: Path, platforms: Sequence[str], skip: Sequence[str] = (),
          also: Sequence[str] = ()) -> Dict[str, Path]:
    present, pins = read_present(present_file)
    skipped = {canonical(name) for name in skip}
    output.mkdir(parents=True, exist_ok=True)
    tag = "py" + python_version.replace(".", "")
    lists = {}
    with tempfile.TemporaryDirectory(prefix="wheelhouse") as tmp:
        work = Path(tmp)
        for release in releases:
            wanted, binaries, sources, on_node = [], [], [], []
            for item in resolve(python, release, present, pins, work, also):
                name, version = item["metadata"]["name"], item["metadata"]["version"]
                if canonical(name) in present:
                    on_node.append(f"{name}=={version}")
                if canonical(name) in {PROJECT, *present, *skipped}:
                    continue
                wanted.append(f"{name}=={version}")
                url = item["download_info"]["url"]
                (binaries if url.endswith(".whl") else sources).append(f"{name}=={version}")
            if binaries:
                platform_args = [a for p in platforms for a in ("--platform", p)]
                run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                     "--only-binary=:all:", "--python-version", python_version,
                     "--implementation", "cp", *platform_args, "-d", output, *binaries],
                    f"downloading the wheels of espnet {release}'s set for Python {python_version}")
            if sources:
                run([work / f"resolve{release}" / "bin" / "python", "-m", "pip", "wheel",
                     "--quiet", "--no-deps", "-w", output, *sources],
                    f"building wheels of source-only packages {sources}")
            run([work / f"resolve{release}" / "bin" / "python", "-m", "pip", "wheel", "--quiet",
                 "--no-deps", "-w", output, REPO], f"building the {PROJECT} wheel")
            wanted.append(f"{PROJECT}=={project_version()}")
            listing = output / f"espnet{release}-{tag}.txt"
            listing.write_text(
                f"# ESPnet {release} and {PROJECT} for Python {python_version}, less what "
                f"{present_file.name} lists; install with\n# pip install --no-index --no-deps "
                f"--find-links <this folder> --target DIR -r {listing.name}\n"
                + "".join(f"{line}\n" for line in sorted(wanted, key=str.lower)))
            lists[release] = listing
            # What the set relies on the node for (at the versions resolved
            # here): the packages a stand-in for the node needs (the dry run).
            (output / f"espnet{release}-{tag}.node.txt").write_text(
                f"# What espnet{release}-{tag}.txt relies on {present_file.name}'s node for, "
                "at the versions resolved here\n"
                + "".join(f"{line}\n" for line in sorted(on_node, key=str.lower)))
    return lists


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="the wheelhouse folder")
    parser.add_argument("--python-version", default="%d.%d" % sys.version_info[:2],
                        help="the node's Python, e.g. 3.12 (default: this one's)")
    parser.add_argument("--python", default=None,
                        help="a Python of that version here (default: found on PATH or pyenv)")
    parser.add_argument("--espnet", nargs="+", default=["202511"], choices=sorted(CONSTRAINTS),
                        help="one set per ESPnet release")
    parser.add_argument("--present", type=Path,
                        default=REPO / "tools" / "wheelhouse" / "h200_present.txt",
                        help="what the node has: `name` or `name==version` per line "
                             "(`python3 -m pip list --format=freeze` there)")
    parser.add_argument("--platform", nargs="+", default=list(DEFAULT_PLATFORMS),
                        help="platform tags the node's pip accepts")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="packages of the closure to leave out because nothing the node "
                             "runs imports them (e.g. espnet 202611's av)")
    parser.add_argument("--also", nargs="*", default=[],
                        help="more requirements to carry (e.g. editdistance, which the "
                             "test suite's helpers import and espnet 202611 no longer pulls in)")
    args = parser.parse_args(argv)
    try:
        if not args.present.is_file():
            raise WheelhouseError(f"--present {args.present}: no such file")
        python = args.python or find_python(args.python_version)
        lists = build(args.output, args.python_version, python, args.espnet, args.present,
                      args.platform, args.skip, args.also)
    except WheelhouseError as error:
        sys.exit(f"build_wheelhouse: {error}")
    size = sum(p.stat().st_size for p in args.output.glob("*.whl"))
    for release, listing in lists.items():
        count = sum(1 for line in listing.read_text().splitlines() if line and line[0] != "#")
        print(f"{listing}: {count} packages")
    print(f"{args.output}: {len(list(args.output.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    main()
