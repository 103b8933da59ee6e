# shellcheck shell=bash
# shellcheck disable=SC2034  # read by run.sh and local/setup.sh, which source it
# The corpus of this asr_gmot recipe. run.sh, path.sh, cmd.sh and local/ are
# links to egs2/aishell/asr_gmot, whose scripts take from this file all that
# differs between the corpora.
corpus_name=LibriSpeech-100
corpus_asr1=librispeech_100    # ESPnet's egs2/<corpus_asr1>/asr1 prepares the data
corpus_lang=en
corpus_token_type=bpe          # asr1's run.sh: --nbpe 5000 (sentencepiece unigram)
corpus_nbpe=5000
corpus_systems="baseline gmot gmot_qwen2"
corpus_system=gmot             # run.sh's default --system
corpus_train_set=train_clean_100
corpus_valid_set=dev
corpus_test_sets="test_clean test_other dev_clean dev_other"
# The sets setup.sh requires in asr1's dump (asr.sh's names: <train_set>_sp
# with speed perturbation; the valid set dev is no test set, so no org/dev).
corpus_dump_sets="train_clean_100_sp dev test_clean test_other dev_clean dev_other"
# asr1's run.sh passes no other asr.sh option that stages 10-13 depend on.
corpus_asr_sh_opts=()
