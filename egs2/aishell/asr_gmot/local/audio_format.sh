#!/usr/bin/env bash
# Prints the --audio_format under which asr.sh reads a raw dump directory: what
# its audio_format file says, else flac.ark when its wav.scp lists ark offsets
# (asr1's run.sh dumps flac.ark; asr.sh then reads the dump as kaldi_ark), else
# flac (asr.sh then reads the listed files as sound files).
#     local/audio_format.sh dump/raw/train_sp
set -euo pipefail

usage="Usage: $0 <raw dump directory>, e.g. $0 dump/raw/train_sp"
if [ "$*" = --help ] || [ "$*" = -h ]; then
    echo "${usage}" >&2
    exit 0
elif [ $# -ne 1 ]; then
    echo "${usage}" >&2
    exit 1
fi
if [ -f "$1/audio_format" ]; then
    cat "$1/audio_format"
elif [ ! -f "$1/wav.scp" ]; then
    echo "$0: neither $1/audio_format nor $1/wav.scp exists" >&2
    exit 1
elif [[ "$(head -n 1 "$1/wav.scp")" =~ \.ark:[0-9]+$ ]]; then
    echo flac.ark
else
    echo flac
fi
