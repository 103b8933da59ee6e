"""``python -m espnet_gmot.bin.asr_train`` recording how its files were put in place.

Run as ``python -m tests.helpers.checkpoint_probe <record.json> <asr_train args>``:
it wraps ``os.replace`` with a recorder, then runs ``espnet_gmot.bin.asr_train``
as ``__main__`` exactly as ``-m espnet_gmot.bin.asr_train`` would. At exit it
writes to ``record.json``:

- ``replaced``: ``[source, target]`` of every ``os.replace`` of the run;
- ``trainer_torch``: the class of ``espnet2.train.trainer``'s ``torch`` name;
- ``torch_save_module``: the module of ``torch.save`` itself (left as it is);
- ``pid``: this process's id.
"""

import atexit
import json
import os
import runpy
import sys
from pathlib import Path

_RECORD = {"replaced": [], "pid": os.getpid()}


def _install() -> None:
    replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        _RECORD["replaced"].append([os.fspath(src), os.fspath(dst)])

    os.replace = recording_replace


def _write(path: Path) -> None:
    import torch
    from espnet2.train import trainer

    _RECORD["trainer_torch"] = type(trainer.torch).__name__
    _RECORD["torch_save_module"] = torch.save.__module__
    path.write_text(json.dumps(_RECORD, indent=1))


if __name__ == "__main__":
    record = Path(sys.argv.pop(1))
    _install()
    atexit.register(_write, record)
    runpy.run_module("espnet_gmot.bin.asr_train", run_name="__main__", alter_sys=True)
