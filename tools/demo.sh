#!/usr/bin/env bash
# The main job: installs what it needs, then runs the generated-corpus demo
# (egs2/synth_mandarin/asr_gmot/run.sh; its options pass through, e.g. --stage 6).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"${repo}/tools/install.sh"
venv=${ESPNET_GMOT_VENV:-${repo}/.venv}
export PATH="${venv}/bin:${PATH}"
exec "${repo}/egs2/synth_mandarin/asr_gmot/run.sh" "$@"
