#!/usr/bin/env bash
# PLM-state cache of the training and valid sets, so that BERT does not run in
# every training step: for each set
#     python -m espnet_gmot.bin.dump_plm_states --text <feats_dir>/<set>/text \
#         --asr_config <asr_config> --plm <plm> \
#         --output_dir <cache_dir>/<plm name>[_<plm_conf key>_<value>...]/<set> <plm_cache_opts>
# (--asr_config: the teacher is read as the config's model_conf.plm_conf says)
# (it resumes an interrupted run), then prints on stdout the asr_train arguments
# that read the cache (--{train,valid}_data_path_and_name_and_type ...
# --allow_variable_data_keys true). A config whose model is not gmot uses no PLM:
# then nothing is computed or printed. Messages go to stderr.
# Run from the recipe directory after `. ./path.sh` (run.sh does both).
set -euo pipefail

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (plm_cache.sh) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

python=python3   # interpreter, or a prefix such as "coverage run --append"
plm=             # PLM of the cache; default the config's model_conf.plm_conf.name_or_path
plm_cache_opts=  # more dump_plm_states options, e.g. "--device cuda --batch_size 128"
compute=true     # false: only print the arguments of the cache already there
help_message="Usage: $0 [--python python3] [--plm <name or dir>] [--plm_cache_opts <options>]
    [--compute true] <asr_config> <feats_dir> <cache_dir> <train_set> <valid_set>
e.g.: $0 conf/train_asr_gmot.yaml dump/raw dump/plm_states train_sp dev"
# shellcheck disable=SC1091
. utils/parse_options.sh
if [ $# -ne 5 ]; then
    echo "${help_message}" >&2
    exit 1
fi
asr_config="$1"
feats_dir="$2"
cache_dir="$3"
train_set="$4"
valid_set="$5"

# shellcheck disable=SC2086
model="$(${python} local/config_value.py "${asr_config}" model espnet)"
if [ "${model}" != gmot ]; then
    log "--plm_cache true ignored: ${asr_config} has model: ${model}, which uses no PLM"
    exit 0
fi
if [ -z "${plm}" ]; then
    # shellcheck disable=SC2086
    plm="$(${python} local/config_value.py "${asr_config}" model_conf.plm_conf.name_or_path)"
fi
[ -n "${plm}" ] || die "--plm_cache true: ${asr_config} has no model_conf.plm_conf.name_or_path; give --plm"
plm_tag="${plm%/}"
plm_tag="${plm_tag##*/}"
# One directory per way of reading the teacher, so that two configs that read
# it differently (another layer, BOS, casing) do not refuse each other's cache.
for key in hidden_layer add_bos_token text_case; do
    # shellcheck disable=SC2086
    value="$(${python} local/config_value.py "${asr_config}" "model_conf.plm_conf.${key}")"
    [ -z "${value}" ] || plm_tag+="_${key}_${value}"
done
plm_dir="${cache_dir}/${plm_tag}"

if "${compute}"; then
    for dset in "${train_set}" "${valid_set}"; do
        log "PLM-state cache (${plm}): ${feats_dir}/${dset}/text -> ${plm_dir}/${dset}"
        # shellcheck disable=SC2086
        ${python} -m espnet_gmot.bin.dump_plm_states --text "${feats_dir}/${dset}/text" \
            --asr_config "${asr_config}" --plm "${plm}" --output_dir "${plm_dir}/${dset}" \
            ${plm_cache_opts} >&2
    done
fi
# kaldi_ark, or npy for a float16 cache: the cache's manifest says which.
# shellcheck disable=SC2086
${python} -m espnet_gmot.bin.plm_cache_args --train "${plm_dir}/${train_set}/plm_states.scp" \
    --valid "${plm_dir}/${valid_set}/plm_states.scp"
