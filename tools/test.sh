#!/usr/bin/env bash
# The test command: installs what the tests need (tools/install.sh returns at
# once when the environment is complete), then runs the whole suite.
# Extra arguments go to pytest (e.g. tools/test.sh -k ot -x). The fast suite for
# day-to-day work (unit tests, under 2 minutes on 2 cores):
#     tools/test.sh -m "not slow and not install"
# The suite includes the `install` tests (tests/install/): `pip install .` into a
# fresh venv WITHOUT tools/constraints.txt, then a tiny train and decode there
# (a few minutes with a warm pip cache; it needs the package index or that
# cache), and the ESPnet 202611 group (tests/espnet202611/, also marked
# install): tools/install.sh --espnet 202611 builds .venv-espnet202611, then the
# fast suite and the greedy-decoding tests run in it. Leave both out with:
# tools/test.sh -m "not install"; only the 202611 group: -m "not espnet202611"
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"${repo}/tools/install.sh"
venv=${ESPNET_GMOT_VENV:-${repo}/.venv}
cd "${repo}"
export PATH="${venv}/bin:${PATH}"
# Two workers (pytest-xdist), a test file each at a time (module fixtures are
# built once), in collection order, which tests/conftest.py starts with the
# longest files: the installs, pip's unpacking and the ESPnet processes'
# start-up are single-threaded, and overlapped with the other worker's tests the
# whole suite fits CI's 90 minutes on 2 cores. -n 0 after it runs one process.
# The slowest tests are listed at the end, to see where the time goes.
# One torch thread per worker (and per process a test starts) unless
# OMP_NUM_THREADS says otherwise: torch's OpenMP threads spin while they wait,
# and two workers of 2 threads each on 2 cores took 406 s on a sample of four
# test files that one thread each ran in 172 s.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25 "$@"
