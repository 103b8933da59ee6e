# shellcheck shell=bash
# Environment of the asr_gmot recipe, sourced by asr.sh (and by run.sh).
#
# ESPnet's egs2/TEMPLATE/asr1/path.sh finds the ESPnet checkout as $PWD/../../..,
# which holds only for a recipe inside that checkout.  This recipe may live
# elsewhere (e.g. in the espnet-gmot repository), so the checkout is taken from
# the asr.sh link that local/setup.sh created:
#     asr.sh -> <ESPnet>/egs2/TEMPLATE/asr1/asr.sh
if [ ! -L asr.sh ] || [ ! -e asr.sh ]; then
    echo "path.sh: ./asr.sh is missing or broken in ${PWD}: run local/setup.sh first" >&2
    return 1
fi
MAIN_ROOT="$(cd "$(dirname "$(readlink -f asr.sh)")/../../.." && pwd)"
KALDI_ROOT="${MAIN_ROOT}/tools/kaldi"
export MAIN_ROOT KALDI_ROOT

# Kaldi scripts (utils/run.pl, utils/split_scp.pl, ...) come through the utils/
# link; Kaldi binaries are needed only by Kaldi feature extraction, which this
# recipe replaces (stages 10-13 run without them).
export PATH="${PWD}/utils:${KALDI_ROOT}/tools/openfst/bin:${PATH}"
if [ -f "${KALDI_ROOT}/tools/config/common_path.sh" ]; then
    # shellcheck disable=SC1091
    . "${KALDI_ROOT}/tools/config/common_path.sh"
fi
export LC_ALL=C

# ESPnet's Python environment and tools (sclite, ...) when its tools/ were
# installed; otherwise the current python3 is used: it must have espnet and
# espnet_gmot installed (see README.md).
if [ -f "${MAIN_ROOT}/tools/activate_python.sh" ]; then
    # shellcheck disable=SC1091
    . "${MAIN_ROOT}/tools/activate_python.sh"
fi
if [ -f "${MAIN_ROOT}/tools/extra_path.sh" ]; then
    # shellcheck disable=SC1091
    . "${MAIN_ROOT}/tools/extra_path.sh"
fi
export PATH="${MAIN_ROOT}/utils:${MAIN_ROOT}/espnet/bin:${PATH}"
# sclite: ESPnet's tools/ (extra_path.sh above) or the venv of tools/install.sh, which links Debian's sclite into its bin/.
if ! command -v sclite >/dev/null 2>&1; then
    echo "path.sh: sclite is not on PATH (scoring needs it): install ESPnet's tools/ or run tools/install.sh and activate its venv" >&2
fi

export OMP_NUM_THREADS=1
# Chinese transcripts under LC_ALL=C
export PYTHONIOENCODING=UTF-8

# Site-specific settings (another virtualenv, CUDA paths, ...) go to local/path.sh.
if [ -f local/path.sh ]; then
    # shellcheck disable=SC1091
    . local/path.sh
fi
