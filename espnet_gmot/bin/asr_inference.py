#!/usr/bin/env python3
"""ESPnet's `espnet2.bin.asr_inference` with the espnet-gmot plugin registered.

Same arguments as ESPnet's; adds `model: gmot` and `frontend: fbank_pitch`.
"""

from espnet_gmot.espnet.registry import register

# At import, not only under __main__: spawned workers import this module.
register()

from espnet2.bin.asr_inference import main as espnet_main  # noqa: E402


def main(cmd=None) -> None:
    espnet_main(cmd)


if __name__ == "__main__":
    main()
