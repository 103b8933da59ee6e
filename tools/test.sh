#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite.
# Extra arguments go to pytest (e.g. tools/test.sh -k ot -x).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"${repo}/tools/install.sh"
venv=${ESPNET_GMOT_VENV:-${repo}/.venv}
cd "${repo}"
export PATH="${venv}/bin:${PATH}"
exec python -m pytest "$@"
