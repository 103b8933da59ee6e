#!/usr/bin/env python3
"""Print the asr_train arguments that train with PLM-state caches.

    python -m espnet_gmot.bin.plm_cache_args \\
        --train dump/plm_states/bert-base-chinese/train_sp/plm_states.scp \\
        --valid dump/plm_states/bert-base-chinese/dev/plm_states.scp

prints, on one line, ``--train_data_path_and_name_and_type <scp>,plm_states,<type>
--valid_data_path_and_name_and_type <scp>,plm_states,<type> --allow_variable_data_keys
true``, where ``<type>`` is the one each cache's manifest names (``kaldi_ark``, or
``npy`` for a float16 cache; see :mod:`espnet_gmot.espnet.plm_cache`). The caches are
the ``plm_states.scp`` files that ``espnet_gmot.bin.dump_plm_states`` writes.
"""

import argparse
from typing import List, Optional

from espnet_gmot.espnet.plm_cache import data_path_argument


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", help="plm_states.scp of the training set")
    parser.add_argument("--valid", help="plm_states.scp of the validation set")
    return parser


def plm_cache_args(train: Optional[str] = None, valid: Optional[str] = None) -> List[str]:
    """The arguments, in order; ESPnet reads the ``plm_states`` data key only with
    ``--allow_variable_data_keys true`` (its ASR task does not declare it)."""
    args = [data_path_argument(scp, split) for split, scp in (("train", train), ("valid", valid)) if scp]
    return [*args, "--allow_variable_data_keys true"]


def main(cmd=None) -> None:
    parser = get_parser()
    args = parser.parse_args(cmd)
    if not (args.train or args.valid):
        parser.error("give --train, --valid or both")
    print(" ".join(plm_cache_args(args.train, args.valid)))


if __name__ == "__main__":
    main()
