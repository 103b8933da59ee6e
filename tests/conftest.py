"""The suite's order: its longest files first.

tools/test.sh runs two pytest-xdist workers, a file each at a time, in this
collection order (``--no-loadscope-reorder``). The files below take 10 to 25
minutes each on 2 cores, mostly in single-threaded pip installs and process
start-ups. Started first, they overlap with the many short files on the other
worker; in xdist's own order (most tests first) they ran last, side by side,
and the suite took 82 minutes of CI's 90.
"""

from pathlib import Path

LONGEST_FIRST = (
    "tests/espnet202611/test_espnet202611.py",
    "tests/recipes/test_synth_demo.py",
    "tests/tools/test_gpu_check.py",
    "tests/install/test_fresh_install.py",
)


def pytest_collection_modifyitems(config, items):
    root = Path(config.rootpath)
    rank = {path: position for position, path in enumerate(LONGEST_FIRST)}

    def position(item):
        return rank.get(Path(item.path).relative_to(root).as_posix(), len(rank))

    items.sort(key=position)  # stable: every other file keeps its place
