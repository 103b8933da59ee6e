#!/usr/bin/env bash
# The whole espnet-gmot pipeline on a Mandarin corpus generated here, on CPU:
#
#   1 corpus    espeak-ng speaks HSK sentences in the AISHELL-1 layout
#   2 teacher   a small character BERT pretrained (masked LM) on People's Daily, and
#               its untrained copy (same architecture, random weights) for gmot_control
#   3 data      Kaldi data dirs and ESPnet's char token list
#   4 features  Kaldi-compatible 80 fbank + 3 pitch (espnet_gmot.bin.dump_fbank_pitch)
#   5 stats     ESPnet collect-stats (shapes, global mean/variance)
#   6 train     stock Conformer-CTC baseline, OT-BERT, TOT-CAKT, GM-OT (optionally the
#               hybrid CTC/attention pair hybrid_baseline, hybrid_gmot, and the control
#               gmot_control), once per seed: exp/asr_<system>_seed<seed>
#   7 decode    dev and test: CTC greedy (batched best path; or ESPnet's beam search);
#               hybrid systems: ESPnet's joint CTC/attention beam search
#   8 score     CER with sclite (Debian sctk)
#   9 report    RESULTS.md (CER mean and deviation over seeds, paired bootstrap intervals
#               against the baseline, homophone-position errors) and coupling heat maps
#  10 pack      optional (--stop_stage 10): one zip per run in exp/packed/, ESPnet's pack
#               for Speech2Text.from_pretrained, without the teacher (README, "Sharing a model")
#
# Against ESPnet's asr.sh (egs2/TEMPLATE/asr1): stages 1-4 do what a recipe's data
# preparation and asr.sh's stages 1-5 do (corpus, Kaldi data dirs, features, token
# list; no speed perturbation), plus the teacher (stage 2), which asr.sh has no stage
# for; stage 5 = asr.sh's stage 10 (collect stats), 6 = 11 (training), 7 = 12
# (decoding), 8 = 13 (scoring); 9, the report, is the demo's own; 10 = 14 (packing).
# It cannot call asr.sh itself: asr.sh lives in an ESPnet git checkout, under
# egs2/TEMPLATE, with Kaldi's utils/ and the sctk/sph2pipe tools, and a pip install
# of ESPnet has none of them; the demo must run after pip alone.
#
# Every Python step of ESPnet runs through `python3 -m espnet_gmot.launch`.
# Stages reuse finished outputs; --stage/--stop_stage pick a range.
#
# Sensitivity sweep (after stages 1-5): local/sweep.py varies one of gw_weight,
# temporal_weight, epsilon, fusion_scale, asr_weight at a time around
# conf/train_asr_<system>.yaml, calling stages 6-8 of this script with
# --tag <param>-<value> --train_args "--model_conf <key>=<value>" (the base value
# is the untagged run), and writes sweep/RESULTS.md and sweep/<param>.png.
# Resumable; --report_only redraws. E.g.
#   python3 local/sweep.py --grid "gw_weight=0,0.1" --seeds "0 1"
#
# Teacher-strength axis (after stages 1-5): local/teacher_axis.py trains the teacher
# at other budgets (--steps, 0 = the untrained control), trains each transfer system
# with each through stages 6-8 (--tag plm_steps-<N>; stage 2's teacher and
# gmot_control are the demo's own runs), and relates CER and the wrong-homophone
# share to the teachers' MLM accuracy in teacher_axis/ and RESULTS.md. E.g.
#   python3 local/teacher_axis.py --steps "0 400 1600 6400" --seeds "0 1 2"
set -euo pipefail

stage=1
stop_stage=9
nj=2                                   # parallel jobs (synthesis, features, decoding)
python=python3
systems="baseline otbert totcakt gmot" # conf/train_asr_<system>.yaml; also gmot_control (GM-OT with
                                       # an untrained teacher), gmot_relaxed, hybrid_baseline and
                                       # hybrid_gmot (Conformer + Transformer decoder)
seeds="0"                              # ESPnet --seed values: each system trains once per seed
train_args=""                          # extra options of espnet2.bin.asr_train for every system,
                                       # e.g. "--model_conf transfer_conf.gw_weight=0.1"
tag=""                                 # names runs trained with train_args: exp/asr_<system>_<tag>_seed<seed>
corpus_opts=""                         # extra options of local/make_corpus.py (e.g. --tiny)
corpus_size="--train_utts_per_speaker 80 --eval_utts_per_speaker 20 --speed_range 160 200"  # sized for the 30-minute budget
plm_steps=1600                         # teacher pretraining budget in optimizer steps (about 3 min on
                                       # 2 cores); with plm_threads fixed, every run gets the same teacher
plm_threads=2                          # torch threads of the teacher's pretraining (changes its weights)
plm_minutes=0                          # a wall-clock budget instead (0 = none): the teacher then
                                       # depends on the machine's speed and load
plm_opts=""                            # extra options of local/train_teacher_plm.py
max_epoch=""                           # overrides the configs' max_epoch when set
test_sets="dev test"
plot_utts=3                            # coupling heat maps per method
inference=ctc_greedy                   # CTC-only systems. ctc_greedy: espnet_gmot.bin.asr_inference_ctc_greedy
                                       # (batched best path); espnet: espnet2.bin.asr_inference (beam 1
                                       # prefix search). Hybrid systems always decode with
                                       # espnet2.bin.asr_inference and conf/decode_asr_hybrid.yaml.

usage() {
    sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'
    echo "Options (default):"
    for name in ${option_names}; do printf '  --%s (%s)\n' "${name}" "${!name}"; done
}
option_names="stage stop_stage nj python systems seeds train_args tag corpus_opts corpus_size plm_steps plm_threads plm_minutes plm_opts max_epoch test_sets plot_utts inference"
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
        --*) name=$1; [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
             value=$2; shift 2 ;;
        *) echo "run.sh: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    name=${name#--}
    name=${name//-/_}
    case " ${option_names} " in
        *" ${name} "*) printf -v "${name}" '%s' "${value}" ;;
        *) echo "run.sh: unknown option --${name} (see --help)" >&2; exit 2 ;;
    esac
done

for seed in ${seeds}; do
    [[ "${seed}" =~ ^[0-9]+$ ]] || { echo "run.sh: --seeds takes non-negative integers, got '${seed}'" >&2; exit 2; }
done
[ -n "${seeds// /}" ] || { echo "run.sh: --seeds is empty; give at least one seed, e.g. --seeds 0" >&2; exit 2; }
[[ "${tag}" =~ ^[A-Za-z0-9._=+-]*$ ]] || { echo "run.sh: --tag '${tag}' may hold only letters, digits and ._=+-" >&2; exit 2; }
case "${inference}" in
    ctc_greedy|espnet) ;;
    *) echo "run.sh: --inference must be ctc_greedy or espnet, got '${inference}'" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"
for system in ${systems}; do
    [ -f "conf/train_asr_${system}.yaml" ] \
        || { echo "run.sh: --systems names '${system}' but conf/train_asr_${system}.yaml does not exist" >&2; exit 2; }
done
launch="${python} -m espnet_gmot.launch -m"
corpus=downloads
token_list=data/zh_token_list/char/tokens.txt
feats=dump/fbank_pitch
stats=exp/asr_stats
mkdir -p exp

log() { echo "$(date '+%H:%M:%S') $*"; }

# run_stage N NAME FUNCTION: runs FUNCTION when N is in range, records its time.
run_stage() {
    local number=$1 name=$2 function=$3 start
    if [ "${number}" -lt "${stage}" ] || [ "${number}" -gt "${stop_stage}" ]; then
        return 0
    fi
    log "stage ${number}: ${name}"
    start=$(date +%s)
    "${function}"
    printf '%s\t%s\t%s\n' "${number}" "${name}" "$(( $(date +%s) - start ))" >> exp/stage_times.tsv
    log "stage ${number}: ${name} done in $(( $(date +%s) - start )) s"
}

make_corpus() {
    # shellcheck disable=SC2086
    ${python} local/make_corpus.py --out_dir "${corpus}" --nj "${nj}" ${corpus_size} ${corpus_opts}
}

train_teacher() {
    # shellcheck disable=SC2086
    ${python} local/train_teacher_plm.py --out_dir exp/teacher_plm \
        --corpus_manifest "${corpus}/data_aishell/manifest.tsv" \
        --max_steps "${plm_steps}" --num_threads "${plm_threads}" --max_minutes "${plm_minutes}" ${plm_opts} \
        --control_dir exp/teacher_plm_control
}

prepare_data() {
    ${python} local/prepare_data.py --corpus_dir "${corpus}" --data_dir data --token_list "${token_list}"
}

dump_features() {
    local set
    for set in train ${test_sets}; do
        if [ -f "${feats}/${set}/feats.scp" ]; then
            log "  ${feats}/${set} exists, kept"
            continue
        fi
        ${python} -m espnet_gmot.bin.dump_fbank_pitch --nj "${nj}" "data/${set}" "${feats}/${set}"
    done
}

data_args() {  # data_args train|valid SET
    echo "--$1_data_path_and_name_and_type ${feats}/$2/feats.scp,speech,kaldi_ark" \
         "--$1_data_path_and_name_and_type data/$2/text,text,text"
}

collect_stats() {
    if [ -f "${stats}/train/feats_stats.npz" ]; then
        log "  ${stats} exists, kept"
        return 0
    fi
    # shellcheck disable=SC2046
    ${launch} espnet2.bin.asr_train --collect_stats true --use_preprocessor true \
        --token_type char --token_list "${token_list}" \
        --config conf/train_asr_baseline.yaml --input_size "$(<"${feats}/train/feats_dim")" \
        --train_shape_file "${feats}/train/feats.scp" --valid_shape_file "${feats}/dev/feats.scp" \
        $(data_args train train) $(data_args valid dev) \
        --output_dir "${stats}" > exp/collect_stats.log 2>&1 \
        || { tail -n 20 exp/collect_stats.log; exit 1; }
}

run_dir() {  # run_dir SYSTEM SEED: the exp dir of one training
    runs_of "$1" "$2"
}

runs() {  # every exp dir of this invocation, systems outer, seeds inner
    runs_of "${systems}" "${seeds}"
}

runs_of() {  # runs_of SYSTEMS SEEDS: the names come from local/runs.py, as stage 9's and the sweep's
    ${python} local/runs.py --exp exp --tag "${tag}" --systems "$1" --seeds "$2"
}

train_systems() {
    local system seed dir start extra=()
    [ -n "${max_epoch}" ] && extra+=(--max_epoch "${max_epoch}")
    # shellcheck disable=SC2206
    extra+=(${train_args})
    for system in ${systems}; do
      for seed in ${seeds}; do
        dir=$(run_dir "${system}" "${seed}")
        if [ -f "${dir}/.done" ]; then
            log "  ${dir} trained, kept"
            continue
        fi
        log "  training ${system} with seed ${seed} (log: ${dir}/train.log)"
        mkdir -p "${dir}"
        start=$(date +%s)
        # shellcheck disable=SC2046
        ${launch} espnet2.bin.asr_train --use_preprocessor true --token_type char \
            --token_list "${token_list}" --config "conf/train_asr_${system}.yaml" \
            --input_size "$(<"${feats}/train/feats_dim")" \
            --normalize global_mvn --normalize_conf "stats_file=${stats}/train/feats_stats.npz" \
            --train_shape_file "${stats}/train/speech_shape" \
            --valid_shape_file "${stats}/valid/speech_shape" --fold_length 800 \
            $(data_args train train) $(data_args valid dev) \
            --resume true --ngpu 0 --seed "${seed}" --output_dir "${dir}" "${extra[@]}" > "${dir}/train.log" 2>&1 \
            || { tail -n 30 "${dir}/train.log"; exit 1; }
        echo $(( $(date +%s) - start )) > "${dir}/train_seconds"
        grep "epoch results" "${dir}/train.log" | tail -n 1 | sed 's/.*\[valid\]/  last epoch [valid]/' || true
        touch "${dir}/.done"
      done
    done
}

is_hybrid() {  # is_hybrid SYSTEM: its config has an attention decoder
    grep -q '^decoder:' "conf/train_asr_$1.yaml"
}

decode_systems() {
    local system seed set out greedy_runs="" espnet_runs=""
    for system in ${systems}; do
        for seed in ${seeds}; do
            if [ "${inference}" = ctc_greedy ] && ! is_hybrid "${system}"; then
                greedy_runs+="$(run_dir "${system}" "${seed}") "
            else
                espnet_runs+="${system}:${seed} "
            fi
        done
    done
    if [ -n "${greedy_runs}" ]; then
        # Batched greedy decoding is so fast that ESPnet's start-up dominates:
        # one process decodes every CTC-only run and set.
        ${python} local/decode_greedy.py --runs "${greedy_runs% }" --sets "${test_sets}" \
            --feats "${feats}" > exp/decode_greedy.log 2>&1 \
            || { tail -n 30 exp/decode_greedy.log; exit 1; }
    fi
    # ESPnet's decoder: one job per (run, set), at most $nj at a time.
    for run in ${espnet_runs}; do
        system=${run%:*}
        seed=${run#*:}
        for set in ${test_sets}; do
            out=$(run_dir "${system}" "${seed}")/decode_${set}
            if [ -f "${out}/text" ]; then
                log "  ${out} exists, kept"
                continue
            fi
            while [ "$(jobs -rp | wc -l)" -ge "${nj}" ]; do
                wait -n || fail_decoding
            done
            log "  decoding ${set} with ${system}, seed ${seed}"
            decode_one "${system}" "${seed}" "${set}" &
        done
    done
    while [ "$(jobs -rp | wc -l)" -gt 0 ]; do
        wait -n || fail_decoding
    done
}

decode_one() {  # decode_one SYSTEM SEED SET: writes <run dir>/decode_SET/text atomically
    local dir out
    dir=$(run_dir "$1" "$2")
    out=${dir}/decode_$3
    local config=conf/decode_asr_ctc_greedy.yaml model=valid.cer_ctc.ave.pth
    if is_hybrid "$1"; then
        # joint CTC/attention beam search on the model ranked by attention accuracy
        config=conf/decode_asr_hybrid.yaml
        model=valid.acc.ave.pth
    fi
    rm -rf "${out}.tmp"
    mkdir -p "${out}.tmp"
    ${launch} espnet2.bin.asr_inference --ngpu 0 --batch_size 1 \
        --data_path_and_name_and_type "${feats}/$3/feats.scp,speech,kaldi_ark" \
        --asr_train_config "${dir}/config.yaml" \
        --asr_model_file "${dir}/${model}" \
        --config "${config}" \
        --output_dir "${out}.tmp/output" > "${out}.tmp/decode.log" 2>&1 \
        || { echo "decoding $3 with $1 (seed $2) failed; see ${out}.tmp/decode.log" >&2; return 1; }
    sort "${out}.tmp/output/1best_recog/text" > "${out}.tmp/text"
    rm -rf "${out}"
    mv "${out}.tmp" "${out}"
}

fail_decoding() {
    wait
    exit 1
}

sclite_bin() {
    if ! command -v sclite > /dev/null; then
        echo "run.sh: sclite not found on PATH: run tools/install.sh (it links Debian's sctk sclite into the venv's bin/)" >&2
        exit 1
    fi
    command -v sclite
}

score_systems() {
    local dir set out sclite
    sclite=$(sclite_bin)
    for dir in $(runs); do
        for set in ${test_sets}; do
            out=${dir}/decode_${set}
            mkdir -p "${out}/score_cer"
            to_trn "data/${set}/text" "data/${set}/utt2spk" > "${out}/score_cer/ref.trn"
            to_trn "${out}/text" "data/${set}/utt2spk" > "${out}/score_cer/hyp.trn"
            "${sclite}" -r "${out}/score_cer/ref.trn" trn -h "${out}/score_cer/hyp.trn" trn \
                -i rm -o all stdout > "${out}/score_cer/result.txt"
            log "  ${dir#exp/} ${set}: $(grep -e Avg -e SPKR -m 2 "${out}/score_cer/result.txt" | tail -n 1 | tr -s ' ')"
        done
    done
}

to_trn() {  # Kaldi text $1 -> the char-level trn sclite reads; speakers from utt2spk $2
    ${python} local/scoring.py trn "$1" "$2"
}

report() {
    local first_seed=${seeds%% *}
    ${python} local/plot_couplings.py --exp exp --systems "${systems}" --seed "${first_seed}" \
        --tag "${tag}" --feats "${feats}/test" --data data/test --num_utts "${plot_utts}"
    ${python} local/write_results.py --exp exp --systems "${systems}" --seeds "${seeds}" \
        --tag "${tag}" --sets "${test_sets}" --inference "${inference}" --output RESULTS.md
    log "  wrote $(pwd)/RESULTS.md"
}

pack_systems() {  # asr.sh's stage 14 through the launcher (espnet_gmot.bin.pack)
    local system seed dir model
    mkdir -p exp/packed
    for system in ${systems}; do
      for seed in ${seeds}; do
        dir=$(run_dir "${system}" "${seed}")
        model=valid.cer_ctc.ave.pth
        is_hybrid "${system}" && model=valid.acc.ave.pth
        [ -f "${dir}/${model}" ] \
            || { echo "run.sh: ${dir}/${model} does not exist: train and decode first (stages 6-8)" >&2; exit 1; }
        ${launch} espnet2.bin.pack asr --asr_train_config "${dir}/config.yaml" \
            --asr_model_file "${dir}/${model}" --option "${stats}/train/feats_stats.npz" \
            --outpath "exp/packed/${dir#exp/}.zip" > "${dir}/pack.log" 2>&1 \
            || { echo "packing ${dir} failed; see ${dir}/pack.log" >&2; exit 1; }
        log "  exp/packed/${dir#exp/}.zip"
      done
    done
}

run_stage 1 corpus make_corpus
run_stage 2 teacher train_teacher
run_stage 3 data prepare_data
run_stage 4 features dump_features
run_stage 5 stats collect_stats
run_stage 6 train train_systems
run_stage 7 decode decode_systems
run_stage 8 score score_systems
run_stage 9 report report
run_stage 10 pack pack_systems
