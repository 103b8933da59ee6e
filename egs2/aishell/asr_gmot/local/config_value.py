#!/usr/bin/env python3
"""Print one value of a YAML config (an ESPnet training config, say).

    local/config_value.py <config> <key>[.<key>...] [<default>]
    local/config_value.py conf/train_asr_gmot.yaml model_conf.plm_conf.name_or_path

A key that is missing or null prints <default>, or an empty line without one.
"""

import sys
from typing import Any

import yaml


def lookup(config: Any, dotted_key: str, default: str = "") -> Any:
    value = config
    for key in dotted_key.split("."):
        if not isinstance(value, dict) or value.get(key) is None:
            return default
        value = value[key]
    return value


def main(argv) -> None:
    if len(argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} <config> <key>[.<key>...] [<default>]")
    with open(argv[0], encoding="utf-8") as f:
        config = yaml.safe_load(f)
    print(lookup(config, *argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
