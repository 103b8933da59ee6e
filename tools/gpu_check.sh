#!/usr/bin/env bash
# Every GPU figure in one bounded run, on a node with no network: installs
# ESPnet and the plugin from a wheelhouse (tools/build_wheelhouse.py) beside the
# node's own torch, then runs each step under its own time limit, so that one
# hang cannot eat the rest, and writes one report.
#
# Usage: tools/gpu_check.sh --wheelhouse DIR [--report FILE] [--steps LIST] [--dry-run]
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
#   --steps LIST      comma-separated step names (default: all), e.g. to rerun
#                     the ones that failed: --steps cuda_tests,bench_ot
#   --dry-run         the same steps on the CPU at tiny sizes (the suite's
#                     tests/tools/test_gpu_check.py runs it, so it cannot rot).
# Steps, each under its own limit. The checks of correctness run side by side
# (they time nothing), then the benchmarks one at a time, alone on the machine:
#   install_<set>   pip install --no-index --no-deps --target, one site per set
#   cuda_tests      the suite's CUDA tests (sync-debug mode, AMP with GradScaler)
#   train_decode    tiny model: gmot, ESPnet's trainer --ngpu 1 --use_amp true,
#                   ESPnet's decoder and the greedy decoder on the GPU
#   espnet202611    the fast suite with ESPnet 202611 (when the wheelhouse has its set)
#   bench_ot        the OT solver on CUDA against POT's per-item loop there
#   bench_model     step time and peak memory ratios, fp32 and AMP, cached PLM
#                   states and the teacher on the fly, ESPnet's AISHELL batch
#   bench_decode    greedy decoding against ESPnet's beam-1 search (AISHELL-size model)
# A step past its limit gets SIGINT first: pytest then still prints which tests
# failed and why, and a benchmark keeps the lines it printed.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
all_steps="cuda_tests,train_decode,espnet202611,bench_ot,bench_model,bench_decode"
wheelhouse=""
report="${OUT:-.}/gpu_check_report.md"
steps=${all_steps}
dry_run=false
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) wheelhouse=${2:-}; shift 2 ;;
        --report) report=${2:-}; shift 2 ;;
        --steps) steps=${2:-}; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        *) echo "gpu_check.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "${wheelhouse}" ] || [ ! -d "${wheelhouse}" ]; then
    echo "gpu_check.sh: --wheelhouse DIR is required and must exist (tools/build_wheelhouse.py builds it)" >&2
    exit 2
fi
for name in ${steps//,/ }; do
    case ",${all_steps}," in
        *",${name},"*) ;;
        *) echo "gpu_check.sh: --steps: unknown step '${name}' (steps: ${all_steps})" >&2; exit 2 ;;
    esac
done
wanted() { case ",${steps}," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

wheelhouse=$(cd "${wheelhouse}" && pwd)
python=${PYTHON:-python3}
tag=$("${python}" -c 'import sys; print("py%d%d" % sys.version_info[:2])')
work=$(mktemp -d /tmp/gpu_check.XXXXXX)
logs=${work}/logs
sections=${work}/sections
mkdir -p "${logs}" "${sections}" "$(dirname "${report}")"
report=$(cd "$(dirname "${report}")" && pwd)/$(basename "${report}")

scale=1
if "${dry_run}"; then
    # The same steps at tiny sizes on 2 CPU cores, where the limits only catch
    # hangs: beside the test suite's other worker, steps took over 3x their GPU
    # limits (cuda_tests, 162 s alone, passed 360 s).
    scale=10
fi

{
    echo "# espnet-gmot GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "- mode: $("${dry_run}" && echo 'dry run (CPU, tiny sizes)' || echo 'GPU'), steps: ${steps}"
    echo "- checkout: $(git -C "${repo}" describe --always --dirty 2>/dev/null || echo unknown) (as git there sees it)"
    echo "- python: $("${python}" -V 2>&1), wheelhouse: $(find "${wheelhouse}" -maxdepth 1 -name '*.whl' | wc -l) wheels"
    "${python}" -c 'import torch; print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"))' 2>&1
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader | sed 's/^/- GPU: /'
    echo "- CPU cores: $(nproc)"
    echo
} > "${report}"

# step ORDER NAME LIMIT_SECONDS COMMAND...: runs it bounded; its outcome and log
# tail go to a section of its own (steps may run side by side), a failure also
# to failed/NAME.
mkdir -p "${work}/failed"
step() {
    local order=$1 name=$2 limit=$(( $3 * scale )) start status outcome seconds
    shift 3
    start=$(date +%s)
    timeout --signal=INT --kill-after=20 "${limit}" "$@" > "${logs}/${name}.log" 2>&1
    status=$?
    seconds=$(( $(date +%s) - start ))
    case "${status}" in
        0) outcome=passed ;;
        124|130|137) outcome="timed out after ${limit} s" ;;
        *) outcome="failed (exit ${status})" ;;
    esac
    [ "${status}" -eq 0 ] || touch "${work}/failed/${name}"
    echo "gpu_check: ${name}: ${outcome} (${seconds} s)" >&2
    {
        echo "## ${name}: ${outcome} (${seconds} s of ${limit} s)"
        echo
        echo '```'
        echo "\$ $*" | cut -c1-400
        tail -n 80 "${logs}/${name}.log"
        echo '```'
        echo
    } > "${sections}/${order}_${name}.md"
}

skip() {
    printf '## %s: skipped (%s)\n\n' "$2" "$3" > "${sections}/$1_$2.md"
    echo "gpu_check: $2: skipped ($3)" >&2
}

found_set=false
for listing in "${wheelhouse}"/espnet*-"${tag}".txt; do
    [ -e "${listing}" ] || continue
    found_set=true
    release=$(basename "${listing}" "-${tag}.txt")
    if [ "${release}" = espnet202611 ] && ! wanted espnet202611; then
        continue
    fi
    step "00" "install_${release}" 30 "${python}" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --find-links "${wheelhouse}" --target "${work}/site_${release}" -r "${listing}"
done
if ! "${found_set}"; then
    skip 00 install "no espnet*-${tag}.txt in ${wheelhouse}: built for another Python?"
    touch "${work}/failed/install"
fi
# The checkout first: its espnet_gmot, not the wheel's copy in the set, is checked.
site=${work}/site_espnet202511
export PYTHONPATH="${repo}:${site}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
cd "${repo}" || exit 1

pytest_args=(-q -p no:cacheprovider -rfEs --tb=short)
cuda_files=(tests/espnet/test_amp.py tests/ot/test_device_resident.py tests/espnet/test_transfer_module.py)

# Checks of correctness, side by side, each in its own pytest folder and with
# a share of the cores (torch takes them all by default): 4 threads each of
# the GPU node's 16 cores, 1 in a dry run on 2 (torch's waiting threads spin,
# so more threads than cores slow every check down).
callers_threads=${OMP_NUM_THREADS-}
if "${dry_run}"; then
    export OMP_NUM_THREADS=1
else
    export OMP_NUM_THREADS=4
fi
if wanted cuda_tests; then
    if "${dry_run}"; then
        step 10 cuda_tests 120 "${python}" -m pytest "${pytest_args[@]}" --basetemp "${work}/pytest_cuda" \
            -m "not slow" "${cuda_files[@]}" &
    else
        # only the tests that need CUDA: the others ran on the CPU in CI
        step 10 cuda_tests 120 "${python}" -m pytest "${pytest_args[@]}" --basetemp "${work}/pytest_cuda" \
            -m "not slow" -k cuda "${cuda_files[@]}" &
    fi
fi
if wanted train_decode; then
    device=cuda
    "${dry_run}" && device=cpu
    step 20 train_decode 150 env ESPNET_GMOT_TEST_DEVICE="${device}" "${python}" -m pytest \
        "${pytest_args[@]}" --basetemp "${work}/pytest_train" -s tests/espnet/test_device_pipeline.py &
fi
if wanted espnet202611; then
    if [ -d "${work}/site_espnet202611" ]; then
        # 136 s alone on 2 CPU cores
        step 30 espnet202611 240 env PYTHONPATH="${repo}:${work}/site_espnet202611" \
            "${python}" -m pytest "${pytest_args[@]}" --basetemp "${work}/pytest_202611" \
            -m "not slow and not install" &
    else
        skip 30 espnet202611 "the wheelhouse has no espnet202611-${tag}.txt set"
    fi
fi
wait

# Benchmarks, one at a time, with the threads the caller's environment gives
# (torch's default, all the cores, where it names none).
if [ -n "${callers_threads}" ]; then
    export OMP_NUM_THREADS=${callers_threads}
else
    unset OMP_NUM_THREADS
fi
if "${dry_run}"; then
    wanted bench_ot && step 40 bench_ot 60 "${python}" bench/bench_ot.py --device cpu --quick \
        --batch-sizes 8 --lengths 100 --repeats 1
    wanted bench_model && step 50 bench_model 120 "${python}" bench/bench_model.py --device cpu \
        --blocks 1 --batch 2 --seconds 1 --repeats 1 --no-memory --systems baseline,gmot
    wanted bench_decode && step 60 bench_decode 60 "${python}" bench/bench_decode.py \
        --model aishell_random --device cpu --utterances 2 --batch_sizes "1 2"
else
    # POT's per-item loop is slow on a GPU: measured on 8 items, scaled beyond.
    wanted bench_ot && step 40 bench_ot 75 "${python}" bench/bench_ot.py --device cuda --batch 8 \
        --batch-sizes 8 32 128 512 --pot-max-batch 8 --lengths 300 1500 --n-batch 2 --repeats 3
    wanted bench_model && step 50 bench_model 90 "${python}" bench/bench_model.py --device cuda --repeats 5
    wanted bench_decode && step 60 bench_decode 45 "${python}" bench/bench_decode.py \
        --model aishell_random --device cuda --utterances 8 --batch_sizes "1 8"
fi

cat "${sections}"/*.md >> "${report}"
failures=$(find "${work}/failed" -type f | wc -l)
tar -czf "$(dirname "${report}")/gpu_check_logs.tar.gz" -C "${work}" logs
echo "gpu_check: ${failures} step(s) failed; report ${report}" >&2
rm -rf "${work}"
[ "${failures}" -eq 0 ]
