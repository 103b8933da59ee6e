"""``python -m espnet_gmot.bin.asr_train`` with a recorder, for the DDP test.

Run as ``python -m torch.distributed.run ... -m tests.helpers.ddp_probe <asr_train
args>``: it installs observers, then runs ``espnet_gmot.bin.asr_train`` as
``__main__`` exactly as ``-m espnet_gmot.bin.asr_train`` would. ESPnet silences
the logging of ranks other than 0, so every worker writes what it saw to
``$GMOT_DDP_PROBE_DIR/rank<RANK>.json`` instead:

- ``ddp``: each ``DistributedDataParallel`` built: class of the wrapped model,
  its ``find_unused_parameters`` and the names of the parameters it syncs;
- ``plm_loads``: each ``transformers.AutoModel.from_pretrained`` call (the PLM
  teacher), and whether one of that model's parameters is among DDP's;
- ``averages``: the input and output of every ``recursive_average`` call of
  ESPnet's trainer (the all-reduce of the reported stats across workers).

It also writes its process id to ``rank<RANK>.pid`` when it starts.
"""

import atexit
import json
import os
import runpy
from pathlib import Path

import torch

_RECORD = {
    "rank": int(os.environ.get("RANK", "-1")),
    "world_size": int(os.environ.get("WORLD_SIZE", "-1")),
    "ddp": [],
    "plm_loads": [],
    "averages": [],
}
_DDP_MODULES = []
_PLM_MODELS = []


def _floats(stats):
    return {k: float(v) for k, v in stats.items() if v is not None}


def _install() -> None:
    ddp_init = torch.nn.parallel.DistributedDataParallel.__init__

    def recording_ddp_init(self, module, *args, **kwargs):
        ddp_init(self, module, *args, **kwargs)
        _DDP_MODULES.append(self)
        _RECORD["ddp"].append({
            "module": type(module).__name__,
            "find_unused_parameters": bool(self.find_unused_parameters),
            "parameters": [n for n, p in module.named_parameters() if p.requires_grad],
        })

    torch.nn.parallel.DistributedDataParallel.__init__ = recording_ddp_init

    import transformers

    auto_from_pretrained = transformers.AutoModel.from_pretrained.__func__

    def recording_from_pretrained(cls, name_or_path, *args, **kwargs):
        model = auto_from_pretrained(cls, name_or_path, *args, **kwargs)
        _PLM_MODELS.append(model)
        _RECORD["plm_loads"].append({"name_or_path": str(name_or_path)})
        return model

    transformers.AutoModel.from_pretrained = classmethod(recording_from_pretrained)

    from espnet2.train import trainer

    average = trainer.recursive_average

    def recording_average(obj, weight, distributed=False):
        local, local_weight = _floats(obj), float(weight.sum())
        out, out_weight = average(obj, weight, distributed)
        _RECORD["averages"].append({
            "distributed": bool(distributed), "local": local, "weight": local_weight,
            "out": _floats(out), "out_weight": float(out_weight),
        })
        return out, out_weight

    trainer.recursive_average = recording_average


def _write() -> None:
    ddp_params = {id(p) for ddp in _DDP_MODULES for p in ddp.parameters()}
    for load, model in zip(_RECORD["plm_loads"], _PLM_MODELS):
        params = list(model.parameters())
        load["parameters"] = len(params)
        load["requires_grad"] = any(p.requires_grad for p in params)
        load["in_ddp"] = any(id(p) in ddp_params for p in params)
    out = Path(os.environ["GMOT_DDP_PROBE_DIR"]) / f"rank{_RECORD['rank']}.json"
    out.write_text(json.dumps(_RECORD, indent=1))


if __name__ == "__main__":
    # for the killed-worker test: which process is this rank (a restart rewrites it)
    (Path(os.environ["GMOT_DDP_PROBE_DIR"]) / f"rank{_RECORD['rank']}.pid").write_text(str(os.getpid()))
    _install()
    atexit.register(_write)
    runpy.run_module("espnet_gmot.bin.asr_train", run_name="__main__", alter_sys=True)
