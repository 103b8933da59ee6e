#!/usr/bin/env python3
"""ESPnet's `espnet2.bin.asr_train` with the espnet-gmot plugin registered.

Same arguments as ESPnet's; adds `model: gmot` and `frontend: fbank_pitch`, and
refuses to start when a `plm_states` cache (given on the command line or in the
--config yaml) misses an utterance of the data or was made from other transcripts.
"""

import sys

from espnet_gmot.espnet.registry import register

# At import, not only under __main__: spawned workers import this module.
register()

from espnet2.bin.asr_train import main as espnet_main  # noqa: E402

from espnet_gmot.espnet.plm_cache import check_plm_cache_covers_data  # noqa: E402


def main(cmd=None) -> None:
    check_plm_cache_covers_data(sys.argv[1:] if cmd is None else cmd)
    espnet_main(cmd)


if __name__ == "__main__":
    main()
