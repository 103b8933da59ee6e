#!/usr/bin/env python3
"""ESPnet's ``espnet2.bin.pack`` for ``model: gmot`` experiments.

Same arguments and archive as ESPnet's (asr.sh stage 14 runs it through
``python3 -m espnet_gmot.launch``, which routes ``espnet2.bin.pack`` here), and
then two changes so that the pack can be shared:

* the packed ``config.yaml`` names the PLM teacher without its training-machine
  path: a local ``model_conf.plm_conf.name_or_path`` becomes the directory's
  name (``/data/plm/bert-base-chinese`` -> ``bert-base-chinese``). The PLM is
  neither packed nor needed to decode (the teacher is built only when training
  needs it); to train on from the pack, point that setting at the PLM again;
* a ``RESULTS.md`` given with ``--option`` starts with a note that the model
  needs the espnet-gmot plugin and how to install and import it. asr.sh's
  upload stages copy ``RESULTS.md`` into the model card (Hugging Face README,
  Zenodo description), so the card says it too.
"""

import logging
import os
import sys
from io import BytesIO
from pathlib import Path
from typing import Optional, Tuple

import yaml
from espnet2.bin.pack import get_parser
from espnet2.bin.pack import main as espnet_main
from espnet2.main_funcs.pack_funcs import Archiver

from espnet_gmot.espnet.registry import MODEL_NAME

PLM_SETTING = "model_conf.plm_conf.name_or_path"
NOTE_BEGIN = "<!-- espnet-gmot: plugin note -->"
NOTE_END = "<!-- espnet-gmot: end of plugin note -->"
PLUGIN_NOTE = f"""{NOTE_BEGIN}
## This model needs the espnet-gmot plugin

It is an ESPnet ASR model with `model: gmot` (OT knowledge transfer from a PLM),
which stock ESPnet does not know. Install the plugin into the ESPnet
environment and import it before loading the model:

```bash
pip install espnet-gmot espnet_model_zoo
```

```python
import espnet_gmot  # registers model: gmot in ESPnet
from espnet2.bin.asr_inference import Speech2Text

speech2text = Speech2Text.from_pretrained("<this model's zip or Hugging Face name>")
```

Command line: `python3 -m espnet_gmot.launch -m espnet2.bin.asr_inference ...`, or the
greedy CTC decoder `python3 -m espnet_gmot.bin.asr_inference_ctc_greedy --model_tag ...`.
Decoding does not need the PLM teacher (it is not packed; the config names it
by `{PLM_SETTING}`).
{NOTE_END}
"""


def looks_local(name_or_path: str) -> bool:
    """A path rather than a Hugging Face hub name (``name`` or ``org/name``)."""
    path = Path(name_or_path).expanduser()
    return (path.exists() or path.is_absolute() or name_or_path.startswith((".", "~"))
            or name_or_path.count("/") > 1)


def portable_config(config: dict) -> Tuple[dict, Optional[Tuple[str, str]]]:
    """``config`` with a local PLM path replaced by its directory's name, and
    ``(old, new)`` when it was replaced."""
    if config.get("model") != MODEL_NAME:
        return config, None
    plm_conf = (config.get("model_conf") or {}).get("plm_conf") or {}
    name = plm_conf.get("name_or_path")
    if not isinstance(name, str) or not looks_local(name):
        return config, None
    new = Path(name.rstrip("/")).name or name
    model_conf = dict(config["model_conf"], plm_conf=dict(plm_conf, name_or_path=new))
    return dict(config, model_conf=model_conf), (name, new)


def add_plugin_note(results_md: Path) -> None:
    """Put :data:`PLUGIN_NOTE` at the top of ``results_md`` (once)."""
    text = results_md.read_text(encoding="utf-8")
    if NOTE_BEGIN in text:
        start, end = text.index(NOTE_BEGIN), text.index(NOTE_END) + len(NOTE_END)
        text = text[:start] + text[end:].lstrip("\n")
    results_md.write_text(PLUGIN_NOTE + "\n" + text, encoding="utf-8")


def rewrite_configs(outpath: Path) -> None:
    """Rewrite the archive with :func:`portable_config` applied to its yaml files."""
    with Archiver(outpath) as archive:
        entries = []
        for info in archive:
            name = archive.get_name_from_info(info)
            if not name.endswith("/"):
                entries.append((name, archive.extractfile(info, mode="rb").read()))
    meta = yaml.safe_load(dict(entries)["meta.yaml"])
    yaml_names = set(meta["yaml_files"].values())
    tmp = outpath.with_name(f".tmp.{os.getpid()}.{outpath.name}")
    try:
        with Archiver(tmp, mode="w") as archive:
            for name, data in entries:
                if name in yaml_names:
                    config, replaced = portable_config(yaml.safe_load(data))
                    if replaced is not None:
                        logging.info(f"{name}: {PLM_SETTING} {replaced[0]} -> {replaced[1]} "
                                     "(the PLM is not packed; decoding does not need it)")
                        data = yaml.safe_dump(config, allow_unicode=True).encode("utf-8")
                archive.addfile(archive.generate_info(name, len(data)), BytesIO(data))
        os.replace(tmp, outpath)
    finally:
        if tmp.exists():
            tmp.unlink()


def main(cmd=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (pack) %(levelname)s: %(message)s")
    args = get_parser().parse_args(sys.argv[1:] if cmd is None else cmd)
    for option in getattr(args, "option", None) or []:
        if Path(option).name == "RESULTS.md" and Path(option).is_file():
            add_plugin_note(Path(option))
    espnet_main(cmd)
    if hasattr(args, "contents"):
        rewrite_configs(Path(args.outpath))


if __name__ == "__main__":
    main()
