#!/usr/bin/env bash
# Prepare an asr_gmot recipe directory: link ESPnet's asr.sh machinery and
# reuse the data, dumps and token list of an existing egs2/<corpus>/asr1
# experiment (the corpus is the recipe's corpus.sh's: aishell here,
# librispeech_100 in egs2/librispeech_100/asr_gmot, which links this script),
# so that `./run.sh --stage 10` starts at collect-stats.
#
# Usage (from the recipe directory, e.g. egs2/aishell/asr_gmot):
#     local/setup.sh [--espnet_root DIR] [--asr1_dir DIR] [--dsets "train_sp dev org/dev test"]
#
#   --espnet_root  ESPnet git checkout (default: $ESPNET_ROOT, else the checkout
#                  this recipe sits in, i.e. ../../.. when that has
#                  egs2/TEMPLATE/asr1/asr.sh).
#   --asr1_dir     the corpus's asr1 experiment to reuse, run at least to its
#                  stage 5 (default: <espnet_root>/egs2/<corpus>/asr1).
#   --dsets        dump sets that must exist in asr1 (default corpus.sh's, for
#                  AISHELL-1 "train_sp dev org/dev test": asr.sh names the
#                  training set train_sp when
#                  --speed_perturb_factors is given, as in asr1's run.sh, and
#                  decodes a valid set that is among the test sets from
#                  org/<valid_set>, the unfiltered copy of its stage 3).
#
# Creates, in the recipe directory (nothing outside it):
#     asr.sh db.sh pyscripts scripts utils steps -> <espnet_root>/egs2/TEMPLATE/asr1/*
#     data -> <asr1_dir>/data
#     dump/                 (a real directory: run.sh writes its own dumps here)
#     dump/raw -> <asr1_dir>/dump/raw                   (if asr1 has it)
#     dump/fbank_pitch -> <asr1_dir>/dump/fbank_pitch   (if asr1 has it)
# path.sh and cmd.sh are the recipe's own files (see path.sh for why).
# Every check runs before the first link is made: on any error nothing changes.
# Running it again re-points the links (e.g. to another asr1 experiment).
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (setup.sh) $*"
}
die() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (setup.sh) ERROR: $*" >&2
    echo "(setup.sh) Nothing was changed." >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

recipe_dir="$(cd "$(dirname "$0")/.." && pwd)"
[ -f "${recipe_dir}/corpus.sh" ] || die "${recipe_dir}/corpus.sh not found: run local/setup.sh of an asr_gmot recipe"
# shellcheck source=corpus.sh
. "${recipe_dir}/corpus.sh"
espnet_root="${ESPNET_ROOT:-}"
asr1_dir=
dsets="${corpus_dump_sets}"

while [ $# -gt 0 ]; do
    case "$1" in
        --espnet_root|--espnet-root) [ $# -ge 2 ] || die "$1 needs a value"; espnet_root="$2"; shift 2 ;;
        --espnet_root=*|--espnet-root=*) espnet_root="${1#*=}"; shift ;;
        --asr1_dir|--asr1-dir) [ $# -ge 2 ] || die "$1 needs a value"; asr1_dir="$2"; shift 2 ;;
        --asr1_dir=*|--asr1-dir=*) asr1_dir="${1#*=}"; shift ;;
        --dsets) [ $# -ge 2 ] || die "$1 needs a value"; dsets="$2"; shift 2 ;;
        --dsets=*) dsets="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# ---------------------------------------------------------------- checks ----
if [ -z "${espnet_root}" ]; then
    if [ -f "${recipe_dir}/../../TEMPLATE/asr1/asr.sh" ]; then
        espnet_root="${recipe_dir}/../../.."
    else
        die "ESPnet checkout unknown: set ESPNET_ROOT or pass --espnet_root DIR (a git clone of https://github.com/espnet/espnet; asr.sh is not part of the pip package)"
    fi
fi
[ -d "${espnet_root}" ] || die "ESPNET_ROOT=${espnet_root} is not a directory"
espnet_root="$(cd "${espnet_root}" && pwd -P)"
template="${espnet_root}/egs2/TEMPLATE/asr1"
[ -f "${template}/asr.sh" ] || die "ESPNET_ROOT=${espnet_root} is not an ESPnet checkout: ${template}/asr.sh not found"
for f in db.sh pyscripts scripts; do
    [ -e "${template}/${f}" ] || die "${template}/${f} not found: incomplete ESPnet checkout"
done
for f in utils steps; do
    [ -e "${template}/${f}" ] || die "${template}/${f} not found or a broken link: ESPnet's recipes need Kaldi's scripts (egs/wsj/s5/{utils,steps}); install them with ESPnet's tools (tools/kaldi), see https://espnet.github.io/espnet/installation.html"
done
[ -f "${template}/utils/parse_options.sh" ] || die "${template}/utils/parse_options.sh not found: Kaldi's utils/ are missing (ESPnet tools/kaldi)"

[ -n "${asr1_dir}" ] || asr1_dir="${espnet_root}/egs2/${corpus_asr1}/asr1"
[ -d "${asr1_dir}" ] || die "asr1 directory ${asr1_dir} not found: run ESPnet's egs2/${corpus_asr1}/asr1 recipe up to stage 5 first, or pass --asr1_dir"
asr1_dir="$(cd "${asr1_dir}" && pwd -P)"
[ "${asr1_dir}" != "$(cd "${recipe_dir}" && pwd -P)" ] || die "--asr1_dir is this recipe directory"

# asr.sh's token directory: data/<lang>_token_list/char, or .../bpe_unigram<nbpe>
# with the sentencepiece model that stages 10-13 tokenise with.
if [ "${corpus_token_type}" = char ]; then
    token_dir="${asr1_dir}/data/${corpus_lang}_token_list/char"; units="character"
else
    token_dir="${asr1_dir}/data/${corpus_lang}_token_list/${corpus_token_type}_unigram${corpus_nbpe}"
    units="${corpus_token_type}${corpus_nbpe}"
    [ -s "${token_dir}/bpe.model" ] || die "${token_dir}/bpe.model not found or empty: asr1 has no ${units} model (run its asr.sh up to stage 5 with --lang ${corpus_lang} --token_type ${corpus_token_type} --nbpe ${corpus_nbpe})"
fi
[ -s "${token_dir}/tokens.txt" ] || die "${token_dir}/tokens.txt not found or empty: asr1 has no ${units} token list (run its asr.sh up to stage 5 with --lang ${corpus_lang} --token_type ${corpus_token_type}${corpus_nbpe:+ --nbpe ${corpus_nbpe}})"

# A dump is usable when every set has its feats_type file (asr.sh stages 3-4).
feats_found=
for ft in raw fbank_pitch; do
    complete=true
    for dset in ${dsets}; do
        [ -f "${asr1_dir}/dump/${ft}/${dset}/feats_type" ] || complete=false
    done
    if ${complete}; then
        feats_found+="${ft} "
    fi
done
if [ -z "${feats_found}" ]; then
    missing=
    for dset in ${dsets}; do
        missing+=" dump/raw/${dset}/feats_type"
    done
    die "${asr1_dir} has no usable dump: none of raw, fbank_pitch has all of the sets '${dsets}' (looked for${missing} and the same under dump/fbank_pitch). Run asr1's asr.sh up to stage 4 (./run.sh --stop_stage 5) first."
fi

# Link targets in the recipe dir must be links (or absent), never real files.
for f in asr.sh db.sh pyscripts scripts utils steps data; do
    p="${recipe_dir}/${f}"
    if [ -e "${p}" ] && [ ! -L "${p}" ]; then
        die "${p} exists and is not a symbolic link; move it away first"
    fi
done
if [ -L "${recipe_dir}/dump" ] || { [ -e "${recipe_dir}/dump" ] && [ ! -d "${recipe_dir}/dump" ]; }; then
    die "${recipe_dir}/dump must be a directory of links; remove it first"
fi
for ft in raw fbank_pitch; do
    p="${recipe_dir}/dump/${ft}"
    if [ -e "${p}" ] && [ ! -L "${p}" ] && [ -d "${asr1_dir}/dump/${ft}" ]; then
        die "${p} is a real directory but asr1 also has dump/${ft}; remove one of them"
    fi
done

# ----------------------------------------------------------------- links ----
cd "${recipe_dir}"
for f in asr.sh db.sh pyscripts scripts utils steps; do
    ln -sfn "${template}/${f}" "${f}"
done
ln -sfn "${asr1_dir}/data" data
mkdir -p dump
for ft in raw fbank_pitch; do
    if [ -d "${asr1_dir}/dump/${ft}" ]; then
        ln -sfn "${asr1_dir}/dump/${ft}" "dump/${ft}"
    elif [ -L "dump/${ft}" ]; then
        rm "dump/${ft}"  # left by an earlier setup with another asr1
    fi
done

log "ESPnet checkout: ${espnet_root}"
log "Reusing ${asr1_dir}: data/, token list, dump/ (${feats_found% })"
log "Linked in ${recipe_dir}: asr.sh db.sh pyscripts scripts utils steps data dump/{${feats_found% }}"
log "Next: ./run.sh --stage 10 [--system gmot|totcakt|otbert|baseline|hybrid_gmot|hybrid_baseline] [--feats_type ${feats_found%% *}]"
