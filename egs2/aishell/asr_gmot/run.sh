#!/usr/bin/env bash
# OT knowledge transfer from a pretrained LM (OT-BERT, TOT-CAKT, GM-OT) beside
# stock ESPnet baselines, on ESPnet's own asr.sh from stage 10 (10 stats,
# 11 training, 12 decoding, 13 scoring) with asr1's data/, dump/ and token list,
# which local/setup.sh links here. The corpus (its asr1, language, token type,
# systems and sets) is ./corpus.sh's; egs2/librispeech_100/asr_gmot links this
# script. README.md: stages, features, decoding, PLM cache.
#     ./run.sh [--system <system>] [--<variable below> value ...] [asr.sh options]
# Other --name value pairs go to asr.sh after run.sh's own, so they win (e.g.
# --ngpu 4 --nj 32 --inference_nj 32 --gpu_inference true). asr.sh runs every
# Python step as `${python} -m espnet_gmot.launch ...`, which registers
# `model: gmot` and `frontend: fbank_pitch` in ESPnet.
set -euo pipefail
# shellcheck source=corpus.sh
. "$(dirname "$0")/corpus.sh"  # the recipe's own corpus.sh (run.sh may link to another recipe's)

stage=10
stop_stage=13
system="${corpus_system}" # one of corpus.sh's systems (README.md); --method is its old name
asr_config=             # training config; default conf/train_asr_<system>.yaml
asr_tag=                # default <config name>_<features>_<lang>_<token type>[_sp]
asr_args=               # extra asr_train arguments (run.sh adds its own)
asr_stats_dir=          # default asr.sh's; its own one for --frontend fbank_pitch
feats_type=raw          # raw (asr1's dump) | fbank_pitch (local/dump_fbank_pitch.sh if missing)
frontend=               # fbank_pitch: the same 80 fbank + 3 pitch on the fly from raw
audio_format=           # of asr1's raw dump; detected (local/audio_format.sh) if empty
plm_cache=false         # true: PLM states of the train and valid sets (local/plm_cache.sh)
plm=                    # PLM of the cache; default the config's plm_conf.name_or_path
plm_cache_opts=         # dump_plm_states options, e.g. "--device cuda --batch_size 128"
fbank_nj=8              # parallel jobs of the fbank_pitch dump
python="${python:-python3}"  # interpreter, or a prefix such as "coverage run --append"
inference=              # stage 12: ctc_greedy (batched best path) | espnet (ESPnet's
                        # decoder); default ctc_greedy, espnet for a hybrid system
inference_batch_size=8  # utterances per greedy batch; each decodes as it does alone
inference_config=       # default conf/decode_asr_ctc_greedy.yaml; for a hybrid system
                        # with --inference espnet conf/decode_asr_hybrid.yaml
inference_asr_model=    # default valid.cer_ctc.ave.pth; valid.acc.ave.pth for a hybrid system
train_set="${corpus_train_set}"
valid_set="${corpus_valid_set}"
test_sets="${corpus_test_sets}"
eval_valid_set=false    # true: decode the valid set even if not in --test_sets
speed_perturb_factors="0.9 1.0 1.1"  # as asr1: asr.sh then trains on train_sp
dumpdir=dump
expdir=exp

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }
one_of() {  # one_of <option> <value> <choice>...: dies unless the value is a choice
    local name="$1" value="$2" choice list=; shift 2
    for choice; do [ "${value}" != "${choice}" ] || return 0; done
    printf -v list '%s, ' "${@:1:$#-1}"
    die "--${name} ${value}: choose ${list%, } or ${!#}"
}

# Not Kaldi's utils/parse_options.sh (asr.sh's and local/'s): it refuses options
# without a variable, which run.sh hands to asr.sh, and --name=value.
asr_sh_opts=("${corpus_asr_sh_opts[@]}")
[ -z "${corpus_nbpe}" ] || opts+=(--nbpe "${corpus_nbpe}")
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^expdir=/p' "$0" | sed -e '/^set -/d' \
            -e '/^# shellcheck/d' -e '/^\. /d' -e 's/^# \{0,1\}//'; exit 0 ;;
        --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
        --*) [ $# -ge 2 ] || die "option $1 needs a value"; name="$1"; value="$2"; shift 2 ;;
        *) die "unexpected argument '$1' (options are --name value pairs; see --help)" ;;
    esac
    name="${name#--}"; name="${name//-/_}"
    case "${name}" in
        stage|stop_stage|system|asr_config|asr_tag|asr_args|asr_stats_dir|feats_type|frontend\
        |audio_format|plm_cache|plm|plm_cache_opts|fbank_nj|python|inference|inference_batch_size\
        |inference_config|inference_asr_model|train_set|valid_set|test_sets|eval_valid_set\
        |speed_perturb_factors|dumpdir|expdir) printf -v "${name}" '%s' "${value}" ;;
        method) system="${value}"
            echo "run.sh: --method is deprecated and will be removed in the next release: use --system ${value} (same values, the word of the demo's --systems)" >&2 ;;
        # asr.sh names the training set <train_set>_sp only in its data-prep block.
        skip_data_prep) die "--skip_data_prep is not supported: stages 1-9 are skipped by --stage 10 already" ;;
        *) asr_sh_opts+=("--${name}" "${value}") ;;
    esac
done

[ "${stage}" -ge 10 ] || die "--stage ${stage}: data preparation (stages 1-9) belongs to egs2/${corpus_asr1}/asr1; run it there, then local/setup.sh, then ./run.sh --stage 10"
[ "${stop_stage}" -ge "${stage}" ] || die "--stop_stage ${stop_stage} is before --stage ${stage}"
if [ -z "${asr_config}" ]; then
    # shellcheck disable=SC2086  # the list of systems
    one_of system "${system}" ${corpus_systems}
    asr_config="conf/train_asr_${system}.yaml"
fi
[ -f "${asr_config}" ] || die "--asr_config ${asr_config} not found"
# A hybrid CTC/attention system (a decoder in its config) decodes with ESPnet's
# joint beam search and ranks its checkpoints by attention accuracy.
if grep -q '^decoder:' "${asr_config}"; then
    : "${inference:=espnet}" "${inference_asr_model:=valid.acc.ave.pth}"
    [ "${inference}" != espnet ] || : "${inference_config:=conf/decode_asr_hybrid.yaml}"
fi
: "${inference:=ctc_greedy}" "${inference_config:=conf/decode_asr_ctc_greedy.yaml}"
: "${inference_asr_model:=valid.cer_ctc.ave.pth}"
[ -f "${inference_config}" ] || die "--inference_config ${inference_config} not found"
one_of feats_type "${feats_type}" raw fbank_pitch
[ "${frontend}" != default ] || frontend=
one_of frontend "${frontend:-default}" default fbank_pitch
[ "${frontend}" != fbank_pitch ] || [ "${feats_type}" = raw ] || die "--frontend fbank_pitch needs --feats_type raw (fbank_pitch dumps are features already)"
one_of inference "${inference}" ctc_greedy espnet
one_of plm_cache "${plm_cache}" true false
one_of eval_valid_set "${eval_valid_set}" true false

if [ ! -L asr.sh ] || [ ! -e asr.sh ] || [ ! -e utils/parse_options.sh ] || [ ! -e "${dumpdir}" ]; then
    die "this recipe is not set up: run local/setup.sh --espnet_root <ESPnet checkout> [--asr1_dir <${corpus_asr1} asr1>] first"
fi
# shellcheck disable=SC1091
. ./path.sh
# shellcheck disable=SC2086
${python} -m espnet_gmot.launch -c "import espnet2, espnet_gmot" >/dev/null 2>&1 || die "'${python} -m espnet_gmot.launch' cannot import espnet2 and espnet_gmot: install espnet and this repository (pip install -e <espnet-gmot>) into the Python environment that path.sh activates (ESPnet's tools/activate_python.sh, or local/path.sh)"

# The directories asr.sh reads under ${dumpdir}/${feats_type}, as it derives them:
# the training and valid sets (stages 10-11), each test set (12-13), but a valid
# set among them (or --eval_valid_set true) from org/, asr1's unfiltered copy.
sp=; [ -z "${speed_perturb_factors}" ] || sp=_sp
train_dump="${train_set}${sp}"  # asr.sh's own name of the perturbed set
test_dsets=
for dset in ${test_sets}; do
    if [ "${dset}" = "${valid_set}" ]; then eval_valid_set=true
    elif [[ " ${test_dsets} " != *" ${dset} "* ]]; then test_dsets+=" ${dset}"; fi
done
if "${eval_valid_set}"; then test_dsets=" org/${valid_set}${test_dsets}"; fi
dsets="${train_dump} ${valid_set}${test_dsets}"

if [ "${feats_type}" = fbank_pitch ]; then  # Kaldi-free, from ${dumpdir}/raw, where missing
    # shellcheck disable=SC2086
    local/dump_fbank_pitch.sh --python "${python}" --nj "${fbank_nj}" "${dumpdir}" ${dsets}
fi
for dset in ${dsets}; do
    [ -f "${dumpdir}/${feats_type}/${dset}/feats_type" ] || die "${dumpdir}/${feats_type}/${dset}/feats_type not found, which asr.sh reads: asr1's dump lacks ${dset} (check --feats_type, --speed_perturb_factors and the sets; org/${valid_set} is where asr.sh decodes the valid set from)"
done
if [ "${feats_type}" = raw ] && [ -z "${audio_format}" ]; then
    audio_format="$(local/audio_format.sh "${dumpdir}/raw/${train_dump}")"
    log "Raw dump read as --audio_format ${audio_format}"
fi
if "${plm_cache}"; then  # computed (or resumed) when stage 10 or 11 runs, which read it
    compute=true; [ "${stage}" -le 11 ] || compute=false
    plm_args="$(local/plm_cache.sh --python "${python}" --plm "${plm}" --compute "${compute}" \
        --plm_cache_opts "${plm_cache_opts}" "${asr_config}" "${dumpdir}/${feats_type}" \
        "${dumpdir}/plm_states" "${train_dump}" "${valid_set}")"
    asr_args="${plm_args}${plm_args:+${asr_args:+ }}${asr_args}"
fi

feats_desc="${feats_type}${frontend:+_${frontend}}"
units="${corpus_lang}_${corpus_token_type}${corpus_nbpe}"  # as asr.sh tags its experiments
if [ "${frontend}" = fbank_pitch ]; then  # its feature statistics differ from the default's
    asr_args="--frontend fbank_pitch${asr_args:+ ${asr_args}}"
    : "${asr_stats_dir:=${expdir}/asr_stats_${feats_desc}_${units}${sp}}"
fi
: "${asr_tag:=$(basename "${asr_config}" .yaml)_${feats_desc}_${units}${sp}}"
opts=(${corpus_asr_sh_opts[@]+"${corpus_asr_sh_opts[@]}"})
[ -z "${corpus_nbpe}" ] || opts+=(--nbpe "${corpus_nbpe}")
[ -z "${audio_format}" ] || opts+=(--audio_format "${audio_format}")
[ -z "${asr_stats_dir}" ] || opts+=(--asr_stats_dir "${asr_stats_dir}")
[ -z "${asr_args}" ] || opts+=(--asr_args "${asr_args}")
launch="${python} -m espnet_gmot.launch"
if [ "${inference}" = ctc_greedy ]; then  # run where asr.sh runs espnet2.bin.asr_inference
    launch+=" --asr_inference espnet_gmot.bin.asr_inference_ctc_greedy"
    opts+=(--batch_size "${inference_batch_size}")
fi

log "asr.sh: ${asr_config} -> ${expdir}/asr_${asr_tag}"
./asr.sh \
    --stage "${stage}" --stop_stage "${stop_stage}" \
    --lang "${corpus_lang}" --token_type "${corpus_token_type}" --feats_type "${feats_type}" --use_lm false \
    --asr_config "${asr_config}" --asr_tag "${asr_tag}" \
    --inference_config "${inference_config}" --inference_asr_model "${inference_asr_model}" \
    --train_set "${train_set}" --valid_set "${valid_set}" --test_sets "${test_sets}" \
    --eval_valid_set "${eval_valid_set}" --speed_perturb_factors "${speed_perturb_factors}" \
    --dumpdir "${dumpdir}" --expdir "${expdir}" \
    --python "${launch}" \
    ${opts[@]+"${opts[@]}"} \
    ${asr_sh_opts[@]+"${asr_sh_opts[@]}"}
