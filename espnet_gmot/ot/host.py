"""The one door between the device and the host.

Reading a device tensor's value on the host (``bool(t)``, ``int(t)``,
``t.tolist()``) makes the host wait for the device: a synchronisation, which on a
GPU drains the queue of launched kernels. The solvers keep their iteration loops
on the device and read values only through :func:`to_host`, at a few chosen
points (input checks, a convergence check every ``check_every`` iterations, the
end of a solve). Routing every read through here lets a test count them on CPU,
where no synchronisation is visible otherwise.
"""

import threading
from typing import List

import torch


class HostReads:
    """Counts host reads per thread (tests read :attr:`count` before and after)."""

    def __init__(self):
        self._local = threading.local()

    @property
    def count(self) -> int:
        return getattr(self._local, "count", 0)

    def add(self) -> None:
        self._local.count = self.count + 1


HOST_READS = HostReads()


def to_host(values: torch.Tensor) -> List:
    """``values.tolist()``, the solvers' only host-device synchronisation.

    Under ``torch.cuda.set_sync_debug_mode("error")`` this read is allowed (the
    mode is lifted for this one call), so a test in that mode fails on any *other*
    synchronisation in the solvers.
    """
    HOST_READS.add()
    mode = torch.cuda.get_sync_debug_mode() if values.is_cuda else 0
    if mode != 0:
        torch.cuda.set_sync_debug_mode(0)
        try:
            return values.detach().tolist()
        finally:
            torch.cuda.set_sync_debug_mode(mode)
    return values.detach().tolist()
