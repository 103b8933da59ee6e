# shellcheck shell=bash
# shellcheck disable=SC2034  # read by run.sh and local/setup.sh, which source it
# The corpus of this asr_gmot recipe: all that run.sh and local/setup.sh do not
# share with the other asr_gmot recipes (egs2/librispeech_100/asr_gmot links
# both scripts here and has its own corpus.sh).
corpus_name=AISHELL-1
corpus_asr1=aishell            # ESPnet's egs2/<corpus_asr1>/asr1 prepares the data
corpus_lang=zh
corpus_token_type=char         # asr.sh's --token_type
corpus_nbpe=                   # asr.sh's --nbpe (bpe only)
corpus_systems="baseline otbert totcakt gmot hybrid_baseline hybrid_gmot"
corpus_system=gmot             # run.sh's default --system
corpus_train_set=train
corpus_valid_set=dev
corpus_test_sets="dev test"
# The sets setup.sh requires in asr1's dump: asr.sh's names with speed
# perturbation (<train_set>_sp), and org/<valid_set>, the unfiltered copy that
# asr.sh decodes when the valid set is also a test set.
corpus_dump_sets="train_sp dev org/dev test"
# asr.sh options of asr1's run.sh that stages 10-13 depend on.
corpus_asr_sh_opts=(--asr_speech_fold_length 512 --asr_text_fold_length 150 --lm_fold_length 150)
