#!/usr/bin/env bash
# Every GPU figure in one bounded run, on a node with no network: installs
# ESPnet and the plugin from a wheelhouse (tools/build_wheelhouse.py) beside the
# node's own torch, then runs each step under its own time limit, so that one
# hang cannot eat the rest, and writes one report.
#
# Usage: tools/gpu_check.sh --wheelhouse DIR [--report FILE] [--dry-run]
#   --wheelhouse DIR  built for the node's Python, e.g. on a machine with the network:
#         python tools/build_wheelhouse.py --output .wheelhouse --python-version 3.12 \
#             --espnet 202511 202611 --skip av kernels pyworld \
#             --also editdistance hsk-sentences-audio
#       (av, kernels and pyworld: in ESPnet's closure, imported by nothing the
#       plugin runs; skipping them keeps both sets near 57 MiB; editdistance and
#       hsk-sentences-audio: the fast suite imports them, and ESPnet 202611 no
#       longer pulls editdistance in).
#   --report FILE     default ${OUT:-.}/gpu_check_report.md; the steps' whole
#                     logs go to FILE's folder as gpu_check_logs.tar.gz.
#   --dry-run         the same steps on the CPU at tiny sizes (the suite's
#                     tests/tools/test_gpu_check.py runs it, so it cannot rot).
# Steps, each under its own limit (on a GPU 495 s of limits in all; the CPU dry
# run of the same steps took 6 minutes on 2 cores):
#   install_<set>   pip install --no-index --no-deps --target, one site per set
#   cuda_tests      the suite's CUDA tests (sync-debug mode, AMP with GradScaler)
#   train_decode    tiny model: gmot, ESPnet's trainer --ngpu 1 --use_amp true,
#                   ESPnet's decoder and the greedy decoder on the GPU
#   bench_ot        the OT solver on CUDA against POT's per-item loop there
#   bench_model     step time and peak memory ratios, fp32 and AMP, cached PLM
#                   states and the teacher on the fly, ESPnet's AISHELL batch
#   bench_decode    greedy decoding against ESPnet's beam-1 search (AISHELL-size model)
#   espnet202611    the fast suite with ESPnet 202611 (when the wheelhouse has its set)
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
wheelhouse=""
report="${OUT:-.}/gpu_check_report.md"
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) wheelhouse=${2:-}; shift 2 ;;
        --report) report=${2:-}; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        *) echo "gpu_check.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "${wheelhouse}" ] || [ ! -d "${wheelhouse}" ]; then
    echo "gpu_check.sh: --wheelhouse DIR is required and must exist (tools/build_wheelhouse.py builds it)" >&2
    exit 2
fi
wheelhouse=$(cd "${wheelhouse}" && pwd)
python=${PYTHON:-python3}
tag=$("${python}" -c 'import sys; print("py%d%d" % sys.version_info[:2])')
work=$(mktemp -d /tmp/gpu_check.XXXXXX)
logs=${work}/logs
mkdir -p "${logs}" "$(dirname "${report}")"
report=$(cd "$(dirname "${report}")" && pwd)/$(basename "${report}")

scale=1
if "${dry_run}"; then
    scale=3  # 2 CPU cores: the same steps, tiny sizes, looser limits
fi
failures=0

{
    echo "# espnet-gmot GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "- mode: $("${dry_run}" && echo 'dry run (CPU, tiny sizes)' || echo 'GPU')"
    echo "- commit: $(git -C "${repo}" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- python: $("${python}" -V 2>&1), wheelhouse: $(find "${wheelhouse}" -maxdepth 1 -name '*.whl' | wc -l) wheels"
    "${python}" -c 'import torch; print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"))' 2>&1
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader | sed 's/^/- GPU: /'
    echo
} > "${report}"

# step NAME LIMIT_SECONDS COMMAND...: runs it bounded, appends its outcome and log tail.
step() {
    local name=$1 limit=$(( $2 * scale )) start status
    shift 2
    start=$(date +%s)
    timeout --kill-after=15 "${limit}" "$@" > "${logs}/${name}.log" 2>&1
    status=$?
    local seconds=$(( $(date +%s) - start )) outcome
    case "${status}" in
        0) outcome=passed ;;
        124|137) outcome="timed out after ${limit} s"; failures=$((failures + 1)) ;;
        *) outcome="failed (exit ${status})"; failures=$((failures + 1)) ;;
    esac
    echo "gpu_check: ${name}: ${outcome} (${seconds} s)" >&2
    {
        echo "## ${name}: ${outcome} (${seconds} s of ${limit} s)"
        echo
        echo '```'
        echo "\$ $*" | cut -c1-400
        tail -n 60 "${logs}/${name}.log"
        echo '```'
        echo
    } >> "${report}"
}

skip() {
    echo "## $1: skipped ($2)" >> "${report}"
    echo >> "${report}"
    echo "gpu_check: $1: skipped ($2)" >&2
}

found_set=false
for listing in "${wheelhouse}"/espnet*-"${tag}".txt; do
    [ -e "${listing}" ] || continue
    found_set=true
    release=$(basename "${listing}" "-${tag}.txt")
    step "install_${release}" 30 "${python}" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --find-links "${wheelhouse}" --target "${work}/site_${release}" -r "${listing}"
done
if ! "${found_set}"; then
    skip install "no espnet*-${tag}.txt in ${wheelhouse}: built for another Python?"
    failures=$((failures + 1))
fi
site=${work}/site_espnet202511
export PYTHONPATH="${site}:${repo}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
cd "${repo}" || exit 1

pytest_args=(-q -p no:cacheprovider -rs --basetemp "${work}/pytest")
if "${dry_run}"; then
    step cuda_tests 60 "${python}" -m pytest "${pytest_args[@]}" -m "not slow" \
        tests/espnet/test_amp.py tests/ot/test_device_resident.py tests/espnet/test_transfer_module.py
    step train_decode 90 "${python}" -m pytest "${pytest_args[@]}" -s tests/espnet/test_device_pipeline.py
    step bench_ot 60 "${python}" bench/bench_ot.py --device cpu --quick --batch-sizes 8 \
        --lengths 100 --repeats 1
    step bench_model 120 "${python}" bench/bench_model.py --device cpu --blocks 1 --batch 2 \
        --seconds 1 --repeats 1 --no-memory --systems baseline,gmot
    step bench_decode 60 "${python}" bench/bench_decode.py --model aishell_random --device cpu \
        --utterances 2 --batch_sizes "1 2"
else
    step cuda_tests 45 "${python}" -m pytest "${pytest_args[@]}" -m "not slow" \
        tests/espnet/test_amp.py tests/ot/test_device_resident.py tests/espnet/test_transfer_module.py
    # A CUDA test that skips here is a failure: the skip reasons are in the log.
    if grep -q "needs .*CUDA" "${logs}/cuda_tests.log"; then
        echo "gpu_check: cuda_tests: CUDA tests were skipped" >&2
        failures=$((failures + 1))
        echo "**cuda_tests: CUDA tests were skipped on the GPU node: failure.**" >> "${report}"
    fi
    step train_decode 60 env ESPNET_GMOT_TEST_DEVICE=cuda "${python}" -m pytest \
        "${pytest_args[@]}" -s tests/espnet/test_device_pipeline.py
    step bench_ot 60 "${python}" bench/bench_ot.py --device cuda --batch-sizes 8 32 128 512 \
        --pot-max-batch 32 --lengths 100 300 750 1500 --repeats 3
    step bench_model 75 "${python}" bench/bench_model.py --device cuda --repeats 5
    step bench_decode 45 "${python}" bench/bench_decode.py --model aishell_random --device cuda \
        --batch_sizes "1 16 32 64"
fi

if [ -d "${work}/site_espnet202611" ]; then
    # 136 s on 2 CPU cores in the dry run
    step espnet202611 150 env PYTHONPATH="${work}/site_espnet202611:${repo}" \
        "${python}" -m pytest "${pytest_args[@]}" -m "not slow and not install"
else
    skip espnet202611 "the wheelhouse has no espnet202611-${tag}.txt set"
fi

tar -czf "$(dirname "${report}")/gpu_check_logs.tar.gz" -C "${work}" logs
echo "gpu_check: ${failures} step(s) failed; report ${report}" >&2
rm -rf "${work}"
[ "${failures}" -eq 0 ]
