# shellcheck shell=bash
# Job runners of the asr_gmot recipe, sourced by asr.sh.
#
# Every job runs on this machine through Kaldi's utils/run.pl (found through the
# utils/ link that local/setup.sh creates).  To submit jobs to a cluster instead,
# export train_cmd/cuda_cmd/decode_cmd before calling run.sh, e.g.
#     export train_cmd="slurm.pl" cuda_cmd="slurm.pl" decode_cmd="slurm.pl"
# (see the runners described in ESPnet's egs2/TEMPLATE/asr1/cmd.sh).
export train_cmd="${train_cmd:-run.pl}"    # collect-stats and other CPU jobs
export cuda_cmd="${cuda_cmd:-run.pl}"      # training (asr.sh adds --gpu)
export decode_cmd="${decode_cmd:-run.pl}"  # decoding
