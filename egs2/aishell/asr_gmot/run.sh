#!/usr/bin/env bash
# AISHELL-1 with OT knowledge transfer from BERT (OT-BERT, TOT-CAKT, GM-OT) and
# its Conformer-CTC baseline, on ESPnet's own asr.sh, from stage 10; and GM-OT
# on ESPnet's hybrid E-Branchformer + Transformer decoder with its stock twin.
#
# Data preparation (asr.sh stages 1-5) belongs to ESPnet's egs2/aishell/asr1;
# local/setup.sh links its data/, dump/ and token list here.  Then:
#     ./run.sh --stage 10 [--system gmot|totcakt|otbert|baseline|hybrid_gmot|hybrid_baseline]
#              [options] [asr.sh options]
#
# Stages (asr.sh's numbering):
#     10  collect stats          11  training
#     12  decoding               13  scoring (CER with sclite)
# Stage 12 of a CTC-only system decodes with espnet_gmot.bin.asr_inference_ctc_greedy
# (--inference ctc_greedy, the papers' best-path decoding, batched): run.sh gives
# asr.sh the prefix "python3 -m espnet_gmot.launch --asr_inference <that module>",
# which runs it where asr.sh asks for espnet2.bin.asr_inference, with the same
# arguments and output files. A hybrid system (its config has a `decoder:`)
# decodes with ESPnet's espnet2.bin.asr_inference (--inference espnet): joint
# CTC/attention beam search as conf/decode_asr_hybrid.yaml says. --inference
# espnet on a CTC-only system keeps ESPnet's decoder too (CTC prefix search with
# beam 1 by default).
# Before asr.sh, run.sh itself may
#     - dump Kaldi-free fbank+pitch features (--feats_type fbank_pitch, when
#       the dump lacks them; needed from stage 10 on),
#     - precompute PLM states of the train and valid sets (--plm_cache true,
#       when stages 10-11 run).
# Every Python step of asr.sh runs as `${python} -m espnet_gmot.launch ...`
# (asr.sh's --python prefix), which registers `model: gmot` and
# `frontend: fbank_pitch` in ESPnet; the baseline takes the same route.
#
# Options of this script (defaults in brackets); any other --option value pair
# is passed to asr.sh unchanged and after run.sh's own, so it wins
# (e.g. --ngpu 4 --nj 32 --inference_nj 32 --gpu_inference true):
#   --stage [10] --stop_stage [13]
#   --system [gmot]         baseline | otbert | totcakt | gmot (CTC-only, the papers')
#                           hybrid_baseline | hybrid_gmot (E-Branchformer + Transformer
#                           decoder, ESPnet's AISHELL-1 setup); --method is its old name
#   --asr_config []         training config; default conf/train_asr_<system>.yaml
#   --asr_tag []            default <config name>_<features>_zh_char[_sp]
#   --asr_args []           extra asr_train arguments (run.sh adds its own)
#   --feats_type [raw]      raw (asr1's waveform dump) | fbank_pitch (80 fbank +
#                           3 pitch, the papers' features, dumped without Kaldi)
#   --frontend []           with --feats_type raw: fbank_pitch computes the same
#                           83-dim features on the fly (ESPnet frontend)
#   --audio_format []       format of asr1's raw dump; detected when empty
#   --plm_cache [false]     precompute PLM states (python -m espnet_gmot.bin.dump_plm_states)
#   --plm []                PLM of the cache; default: the config's plm_conf.name_or_path
#   --plm_cache_opts []     extra dump_plm_states options, e.g. "--device cuda --batch_size 128"
#   --fbank_nj [8]          parallel jobs of the fbank_pitch dump
#   --python [python3]      interpreter, or a prefix such as "coverage run --append"
#   --inference []          ctc_greedy | espnet (see stage 12 above); default
#                           ctc_greedy, espnet for a hybrid system
#   --inference_batch_size [8] utterances per greedy decoding batch (asr.sh's
#                           --batch_size); each decodes exactly as it does alone
#   --inference_config []   default conf/decode_asr_ctc_greedy.yaml, for a hybrid
#                           system with --inference espnet conf/decode_asr_hybrid.yaml
#   --inference_asr_model [] default valid.cer_ctc.ave.pth, for a hybrid system
#                           valid.acc.ave.pth (the configs' best_model_criterion)
#   --train_set [train] --valid_set [dev] --test_sets ["dev test"]
#   --eval_valid_set [false] decode the valid set even if not in --test_sets
#                           (asr.sh decodes it from <dumpdir>/<feats>/org/<valid_set>)
#   --speed_perturb_factors ["0.9 1.0 1.1"]  as asr1: asr.sh then trains on train_sp
#   --dumpdir [dump] --expdir [exp]
set -euo pipefail

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"
}
die() {
    log "ERROR: $*" >&2
    exit 1
}

stage=10
stop_stage=13
system=gmot
asr_config=
asr_tag=
asr_args=
asr_stats_dir=
feats_type=raw
frontend=
audio_format=
plm_cache=false
plm=
plm_cache_opts=
fbank_nj=8
python="${python:-python3}"
inference=
inference_batch_size=8
inference_config=
inference_asr_model=
train_set=train
valid_set=dev
test_sets="dev test"
eval_valid_set=false
speed_perturb_factors="0.9 1.0 1.1"
dumpdir=dump
expdir=exp

own_options="stage stop_stage system asr_config asr_tag asr_args asr_stats_dir feats_type"
own_options+=" frontend audio_format plm_cache plm plm_cache_opts fbank_nj python"
own_options+=" inference inference_batch_size inference_config inference_asr_model train_set valid_set test_sets eval_valid_set"
own_options+=" speed_perturb_factors dumpdir expdir"
passthrough=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0 ;;
        --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
        --*)
            [ $# -ge 2 ] || die "option $1 needs a value"
            name="$1"; value="$2"; shift 2 ;;
        *) die "unexpected argument '$1' (options are --name value pairs; see --help)" ;;
    esac
    name="${name#--}"
    name="${name//-/_}"
    if [ "${name}" = method ]; then
        echo "run.sh: --method is deprecated and will be removed in the next release: use --system ${value} (same values, the word of the demo's --systems)" >&2
        name=system
    fi
    if [ "${name}" = skip_data_prep ]; then
        # asr.sh appends _sp to --train_set only inside its data-prep block, so
        # skipping it would train on the unperturbed set (stages 1-5 are
        # skipped anyway by --stage 10).
        die "--skip_data_prep is not supported: stages 1-9 are skipped by --stage 10 already"
    fi
    if [[ " ${own_options} " == *" ${name} "* ]]; then
        printf -v "${name}" '%s' "${value}"
    else
        passthrough+=("--${name}" "${value}")
    fi
done

# ------------------------------------------------------------- checks ----
[ "${stage}" -ge 10 ] || die "--stage ${stage}: data preparation (stages 1-9) belongs to egs2/aishell/asr1; run it there, then local/setup.sh, then ./run.sh --stage 10"
[ "${stop_stage}" -ge "${stage}" ] || die "--stop_stage ${stop_stage} is before --stage ${stage}"

if [ -z "${asr_config}" ]; then
    case "${system}" in
        baseline|otbert|totcakt|gmot|hybrid_baseline|hybrid_gmot) asr_config="conf/train_asr_${system}.yaml" ;;
        *) die "--system ${system}: choose baseline, otbert, totcakt, gmot, hybrid_baseline or hybrid_gmot" ;;
    esac
fi
[ -f "${asr_config}" ] || die "--asr_config ${asr_config} not found"

# A hybrid CTC/attention system (a decoder in its config) decodes with ESPnet's
# joint beam search; the greedy decoder reads CTC only.
hybrid=false
if grep -q '^decoder:' "${asr_config}"; then
    hybrid=true
fi
if [ -z "${inference}" ]; then
    if "${hybrid}"; then inference=espnet; else inference=ctc_greedy; fi
fi
if [ -z "${inference_config}" ]; then
    if "${hybrid}" && [ "${inference}" = espnet ]; then
        inference_config=conf/decode_asr_hybrid.yaml
    else
        inference_config=conf/decode_asr_ctc_greedy.yaml
    fi
fi
if [ -z "${inference_asr_model}" ]; then
    if "${hybrid}"; then inference_asr_model=valid.acc.ave.pth; else inference_asr_model=valid.cer_ctc.ave.pth; fi
fi
[ -f "${inference_config}" ] || die "--inference_config ${inference_config} not found"

case "${feats_type}" in
    raw|fbank_pitch) ;;
    *) die "--feats_type ${feats_type}: choose raw or fbank_pitch" ;;
esac
case "${frontend}" in
    ""|default) frontend= ;;
    fbank_pitch) [ "${feats_type}" = raw ] || die "--frontend fbank_pitch needs --feats_type raw (fbank_pitch dumps are features already)" ;;
    *) die "--frontend ${frontend}: choose default or fbank_pitch" ;;
esac
case "${inference}" in
    ctc_greedy|espnet) ;;
    *) die "--inference ${inference}: choose ctc_greedy or espnet" ;;
esac
case "${plm_cache}" in
    true|false) ;;
    *) die "--plm_cache ${plm_cache}: choose true or false" ;;
esac
case "${eval_valid_set}" in
    true|false) ;;
    *) die "--eval_valid_set ${eval_valid_set}: choose true or false" ;;
esac

if [ ! -L asr.sh ] || [ ! -e asr.sh ] || [ ! -e utils/parse_options.sh ] || [ ! -e "${dumpdir}" ]; then
    die "this recipe is not set up: run local/setup.sh --espnet_root <ESPnet checkout> [--asr1_dir <aishell asr1>] first"
fi
# shellcheck disable=SC1091
. ./path.sh

# shellcheck disable=SC2086
if ! ${python} -m espnet_gmot.launch -c "import espnet2, espnet_gmot" >/dev/null 2>&1; then
    die "'${python} -m espnet_gmot.launch' cannot import espnet2 and espnet_gmot: install espnet and this repository (pip install -e <espnet-gmot>) into the Python environment that path.sh activates (ESPnet's tools/activate_python.sh, or local/path.sh)"
fi

sp=
if [ -n "${speed_perturb_factors}" ]; then
    sp=_sp
fi
train_dump="${train_set}${sp}"  # asr.sh's own naming of the perturbed set

# The dump directories asr.sh reads, under ${dumpdir}/<feats_type>/, as asr.sh
# itself derives them: stages 10-11 read the training and valid sets; stages
# 12-13 decode and score each test set once, except that a valid set among the
# test sets (or --eval_valid_set true) is decoded from org/<valid_set>, the
# unfiltered copy written by its stage 3, and its results land in
# <inference tag>/org/<valid_set>/.
decode_dsets=
for dset in ${test_sets}; do
    if [ "${dset}" = "${valid_set}" ]; then
        eval_valid_set=true
    elif [[ " ${decode_dsets} " != *" ${dset} "* ]]; then
        decode_dsets+="${dset} "
    fi
done
if "${eval_valid_set}"; then
    decode_dsets="org/${valid_set} ${decode_dsets}"
fi
asr_dsets="${train_dump} ${valid_set} ${decode_dsets% }"
data_feats="${dumpdir}/${feats_type}"
feats_desc="${feats_type}"
if [ "${frontend}" = fbank_pitch ]; then
    feats_desc=raw_fbank_pitch
fi

# ------------------------------------ Kaldi-free fbank+pitch dump (opt.) ----
if [ "${feats_type}" = fbank_pitch ]; then
    for dset in ${asr_dsets}; do
        [ -f "${data_feats}/${dset}/feats_type" ] && continue
        if [ -L "${data_feats}" ]; then
            die "${data_feats} (a link to asr1's dump) has no ${dset}, which asr.sh reads; complete it in asr1, or use --feats_type raw --frontend fbank_pitch"
        fi
        src="${dumpdir}/raw/${dset}"
        [ -f "${src}/wav.scp" ] || die "${data_feats}/${dset} (read by asr.sh) is missing and there is no ${src}/wav.scp to compute it from"
        first="$(head -n 1 "${src}/wav.scp")"
        entry="${first#* }"
        if [[ "${entry}" == *"|"* ]] || [[ "${entry}" =~ \.ark:[0-9]+$ ]] || [ ! -f "${entry}" ]; then
            die "${src}/wav.scp does not list plain audio files (first entry: '${entry}'), which espnet_gmot.bin.dump_fbank_pitch needs; asr1 probably dumped with --audio_format flac.ark. Either use --feats_type raw --frontend fbank_pitch (the same 83-dim features computed on the fly from asr1's raw dump), or re-run asr1's stages 3-4 with --audio_format flac"
        fi
        log "fbank_pitch dump (Kaldi-free): ${src} -> ${data_feats}/${dset}"
        # shellcheck disable=SC2086
        ${python} -m espnet_gmot.bin.dump_fbank_pitch --nj "${fbank_nj}" "${src}" "${data_feats}/${dset}"
    done
fi

for dset in ${asr_dsets}; do
    [ -f "${data_feats}/${dset}/feats_type" ] || die "${data_feats}/${dset}/feats_type not found, which asr.sh reads: asr1's dump lacks ${dset} (check --feats_type, --speed_perturb_factors and the sets; org/${valid_set} is where asr.sh decodes the valid set from)"
done

if [ "${feats_type}" = raw ] && [ -z "${audio_format}" ]; then
    # asr.sh reads the raw dump as kaldi_ark when --audio_format contains "ark"
    # (asr1's run.sh uses flac.ark), else as sound files.
    if [ -f "${data_feats}/${train_dump}/audio_format" ]; then
        audio_format="$(<"${data_feats}/${train_dump}/audio_format")"
    else
        first="$(head -n 1 "${data_feats}/${train_dump}/wav.scp")"
        if [[ "${first#* }" =~ \.ark:[0-9]+$ ]]; then
            audio_format=flac.ark
        else
            audio_format=flac
        fi
    fi
    log "Raw dump read as --audio_format ${audio_format}"
fi

# ------------------------------------------------ PLM-state cache (opt.) ----
if "${plm_cache}"; then
    # shellcheck disable=SC2086
    cfg="$(${python} -m espnet_gmot.launch -c '
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    config = yaml.safe_load(f) or {}
plm_conf = (config.get("model_conf") or {}).get("plm_conf") or {}
print(config.get("model", "espnet"), plm_conf.get("name_or_path", "-"))
' "${asr_config}")"
    read -r cfg_model cfg_plm <<< "${cfg}"
    if [ "${cfg_model}" != gmot ]; then
        log "--plm_cache true ignored: ${asr_config} has model: ${cfg_model}, which uses no PLM"
    else
        if [ -z "${plm}" ]; then
            plm="${cfg_plm}"
        fi
        [ "${plm}" != - ] || die "--plm_cache true: ${asr_config} has no model_conf.plm_conf.name_or_path; give --plm"
        plm_tag="${plm%/}"
        plm_tag="${plm_tag##*/}"
        plm_dir="${dumpdir}/plm_states/${plm_tag}"
        if [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 10 ]; then
            for dset in "${train_dump}" "${valid_set}"; do
                log "PLM-state cache (${plm}): ${data_feats}/${dset}/text -> ${plm_dir}/${dset}"
                # shellcheck disable=SC2086
                ${python} -m espnet_gmot.bin.dump_plm_states \
                    --text "${data_feats}/${dset}/text" \
                    --plm "${plm}" \
                    --output_dir "${plm_dir}/${dset}" \
                    ${plm_cache_opts}
            done
        fi
        # kaldi_ark, or npy for a float16 cache: the cache's manifest says which.
        # shellcheck disable=SC2086
        plm_data_args="$(${python} -m espnet_gmot.launch -c '
import sys
from espnet_gmot.espnet.plm_cache import data_path_argument
print(data_path_argument(sys.argv[1], "train"), data_path_argument(sys.argv[2], "valid"))
' "${plm_dir}/${train_dump}/plm_states.scp" "${plm_dir}/${valid_set}/plm_states.scp")"
        asr_args="${plm_data_args} --allow_variable_data_keys true${asr_args:+ ${asr_args}}"
    fi
fi

# -------------------------------------------------------------- asr.sh ----
if [ "${frontend}" = fbank_pitch ]; then
    asr_args="--frontend fbank_pitch${asr_args:+ ${asr_args}}"
    # Its feature statistics differ from the default frontend's.
    if [ -z "${asr_stats_dir}" ]; then
        asr_stats_dir="${expdir}/asr_stats_${feats_desc}_zh_char${sp}"
    fi
fi
if [ -z "${asr_tag}" ]; then
    asr_tag="$(basename "${asr_config}" .yaml)_${feats_desc}_zh_char${sp}"
fi

opts=()
if [ -n "${audio_format}" ]; then
    opts+=(--audio_format "${audio_format}")
fi
if [ -n "${asr_stats_dir}" ]; then
    opts+=(--asr_stats_dir "${asr_stats_dir}")
fi
if [ -n "${asr_args}" ]; then
    opts+=(--asr_args "${asr_args}")
fi

launch="${python} -m espnet_gmot.launch"
if [ "${inference}" = ctc_greedy ]; then
    launch+=" --asr_inference espnet_gmot.bin.asr_inference_ctc_greedy"
    opts+=(--batch_size "${inference_batch_size}")
fi

log "asr.sh: ${asr_config} -> ${expdir}/asr_${asr_tag}"
./asr.sh \
    --stage "${stage}" \
    --stop_stage "${stop_stage}" \
    --lang zh \
    --token_type char \
    --feats_type "${feats_type}" \
    --use_lm false \
    --asr_config "${asr_config}" \
    --asr_tag "${asr_tag}" \
    --inference_config "${inference_config}" \
    --inference_asr_model "${inference_asr_model}" \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --eval_valid_set "${eval_valid_set}" \
    --speed_perturb_factors "${speed_perturb_factors}" \
    --dumpdir "${dumpdir}" \
    --expdir "${expdir}" \
    --asr_speech_fold_length 512 \
    --asr_text_fold_length 150 \
    --lm_fold_length 150 \
    --python "${launch}" \
    ${opts[@]+"${opts[@]}"} \
    ${passthrough[@]+"${passthrough[@]}"}
