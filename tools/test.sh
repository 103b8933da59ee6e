#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite.
# Extra arguments go to pytest (e.g. tools/test.sh -k ot -x).
# The suite includes the `install` tests (tests/install/): `pip install .` into a
# fresh venv WITHOUT tools/constraints.txt, then a tiny train and decode there
# (a few minutes with a warm pip cache; it needs the package index or that
# cache). Leave them out with: tools/test.sh -m "not install"
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"${repo}/tools/install.sh"
venv=${ESPNET_GMOT_VENV:-${repo}/.venv}
cd "${repo}"
export PATH="${venv}/bin:${PATH}"
exec python -m pytest "$@"
