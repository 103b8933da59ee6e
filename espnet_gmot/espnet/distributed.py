"""A distributed worker's process group, destroyed before the interpreter exits.

ESPnet's trainer initialises the process group (``torch.distributed``, gloo on
CPU, NCCL on GPUs) and never destroys it. With gloo, the group's worker threads
can then still hold tensors when the interpreter tears down, and a worker that
finished training aborts (SIGABRT, "terminate called without an active
exception"): torchrun reports the worker failed, and with several nodes the
other node's agent waits for it until its rendezvous times out. PyTorch asks
applications to call ``destroy_process_group`` before they exit;
:func:`install` (run by :func:`espnet_gmot.espnet.registry.register`, so in
every worker that trains ``model: gmot``) does so at exit.
"""

import atexit

_INSTALLED = False


def destroy_process_group_if_initialized() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def install() -> None:
    """Destroy the process group at exit, if one was initialised (idempotent)."""
    global _INSTALLED
    if not _INSTALLED:
        atexit.register(destroy_process_group_if_initialized)
        _INSTALLED = True
