#!/usr/bin/env bash
# Kaldi-free fbank+pitch dump (80 fbank + 3 pitch, the papers' features) of the
# directories that asr.sh will read and <dumpdir>/fbank_pitch lacks, from the
# same directories of asr1's raw dump:
#     <dumpdir>/raw/<dset> -> <dumpdir>/fbank_pitch/<dset>
# with `python -m espnet_gmot.bin.dump_fbank_pitch` (no Kaldi). A directory with
# its feats_type file is complete and kept; an interrupted one is redone. The raw
# dump must list plain audio files (asr1 run with --audio_format flac or wav).
# Run from the recipe directory after `. ./path.sh` (run.sh does both).
set -euo pipefail

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (dump_fbank_pitch.sh) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

python=python3  # interpreter, or a prefix such as "coverage run --append"
nj=8            # parallel jobs per directory
help_message="Usage: $0 [--python python3] [--nj 8] <dumpdir> <dset> [<dset> ...]
e.g.: $0 --nj 8 dump train_sp dev org/dev test"
# shellcheck disable=SC1091
. utils/parse_options.sh
if [ $# -lt 2 ]; then
    echo "${help_message}" >&2
    exit 1
fi
dumpdir="$1"
shift

for dset in "$@"; do
    dst="${dumpdir}/fbank_pitch/${dset}"
    [ ! -f "${dst}/feats_type" ] || continue
    if [ -L "${dumpdir}/fbank_pitch" ]; then
        die "${dumpdir}/fbank_pitch (a link to asr1's dump) has no ${dset}, which asr.sh reads; complete it in asr1, or use --feats_type raw --frontend fbank_pitch"
    fi
    src="${dumpdir}/raw/${dset}"
    [ -f "${src}/wav.scp" ] || die "${dst} (read by asr.sh) is missing and there is no ${src}/wav.scp to compute it from"
    first="$(head -n 1 "${src}/wav.scp")"
    entry="${first#* }"
    if [[ "${entry}" == *"|"* ]] || [[ "${entry}" =~ \.ark:[0-9]+$ ]] || [ ! -f "${entry}" ]; then
        die "${src}/wav.scp does not list plain audio files (first entry: '${entry}'), which espnet_gmot.bin.dump_fbank_pitch needs; asr1 probably dumped with --audio_format flac.ark. Either use --feats_type raw --frontend fbank_pitch (the same 83-dim features computed on the fly from asr1's raw dump), or re-run asr1's stages 3-4 with --audio_format flac"
    fi
    log "fbank_pitch dump (Kaldi-free): ${src} -> ${dst}"
    # shellcheck disable=SC2086
    ${python} -m espnet_gmot.bin.dump_fbank_pitch --nj "${nj}" "${src}" "${dst}"
done
