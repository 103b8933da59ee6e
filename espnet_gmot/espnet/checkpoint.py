"""Training checkpoints that a killed run or a full disk cannot take away.

ESPnet's trainer (``espnet2.train.trainer.Trainer.run``, in 202511 as in
202611) ends every epoch with ``torch.save(..., output_dir / "checkpoint.pth")``
and ``torch.save(model_state_dict, output_dir / f"{iepoch}epoch.pth")``, written
in place over the previous files. A run stopped during that write leaves a
truncated file where the previous epoch's complete checkpoint was: rank 0 of a
torchrun job whose survivors torchrun tears down after another worker died
(SIGTERM, then SIGKILL), a job killed by its scheduler, a disk that fills. The
same command with ``--resume true`` then fails inside torch's unpickler.

:func:`install` (run by :func:`espnet_gmot.espnet.registry.register`) makes
those writes atomic, for ESPnet's trainer only: the file is written beside its
target under a temporary name, flushed and fsync'ed, and renamed onto the
target, so the target holds the previous checkpoint or the new one, never part
of one. It also makes ``Trainer.resume`` name a checkpoint that cannot be read
(one an older run left truncated) and say what to do.
"""

import functools
import logging
import os
import zipfile
from pathlib import Path
from typing import Optional, Union

from espnet_gmot.atomic import atomic_write, remove_stale_temporaries

PathLike = Union[str, os.PathLike]

_LOG = logging.getLogger(__name__)


def atomic_save(obj, path: PathLike, *args, save=None, **kwargs) -> None:
    """``torch.save(obj, path, *args, **kwargs)`` through :func:`atomic_write`.

    ``save`` replaces ``torch.save`` (it is given an open binary file).
    """
    if save is None:
        import torch

        save = torch.save
    # A killed rank 0 leaves its temporary file behind; the next save removes it.
    path = Path(path).resolve() if Path(path).is_symlink() else Path(path)
    remove_stale_temporaries(path)
    with atomic_write(path, durable=True) as f:
        save(obj, f, *args, **kwargs)


class TorchWithAtomicSave:
    """``torch`` as ESPnet's trainer module sees it: ``save`` to a path is atomic.

    :func:`install` puts it in place of the ``torch`` name of
    ``espnet2.train.trainer``, whose ``Trainer.run`` writes ``checkpoint.pth``
    and ``<epoch>epoch.pth`` in place with ``torch.save`` (see the module
    docstring). Replacing that one name changes those writes and nothing else:
    ``torch.save`` itself, and every other module's, stays as it is (a
    ``Trainer`` subclass could not do it without copying ESPnet's long
    ``run``; patching ``torch.save`` would change every caller's). ``save``
    to a ``str`` or ``os.PathLike`` goes through :func:`atomic_save`; to a file
    object it is the wrapped ``save`` unchanged. Every other attribute is the
    wrapped module's, looked up at each access.
    """

    __slots__ = ("_torch",)

    def __init__(self, torch_module):
        self._torch = torch_module

    def save(self, obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            return atomic_save(obj, f, *args, save=self._torch.save, **kwargs)
        return self._torch.save(obj, f, *args, **kwargs)

    def __getattr__(self, name):
        if name == "_torch":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self._torch, name)

    def __dir__(self):
        return sorted(set(dir(self._torch)) | {"save"})

    def __repr__(self):
        return f"<{type(self).__name__} of {self._torch!r}>"


# --------------------------------------------------------------------------
# A checkpoint that cannot be read, on resume
# --------------------------------------------------------------------------
class CheckpointError(RuntimeError):
    """A checkpoint to resume from that is not a complete torch archive."""


def incomplete_archive(path: PathLike) -> Optional[str]:
    """Why ``path`` is not a complete ``torch.save`` zip archive, or None if it is one.

    A write cut short loses the archive's central directory, which is written
    last; an in-place ``torch.save`` whose pickling failed leaves an archive
    without ``data.pkl``. (Whether the records are intact, torch checks itself.)
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return f"not a complete zip archive ({os.path.getsize(path)} bytes)"
    except OSError:
        return None  # unreadable for another reason: torch's error says which
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "an archive without data.pkl"
    return None


def _unreadable_checkpoint_message(checkpoint: Path, problem: str) -> str:
    latest = checkpoint.parent / "latest.pth"
    weights = (f" To keep the weights of the last finished epoch instead, start a new run "
               f"from them with --init_param {latest} (the optimizer and scheduler states "
               f"are lost)." if latest.exists() else "")
    return (f"Cannot resume from {checkpoint}: it is {problem}. A run was most likely "
            f"killed, or ran out of disk space, while writing it (before espnet-gmot wrote "
            f"checkpoints atomically). Move it aside and rerun the same command to train "
            f"from the first epoch.{weights}")


def _naming_unreadable_checkpoints(resume):
    """``Trainer.resume``, whose failure on an incomplete archive names the file."""

    @functools.wraps(resume)
    def wrapper(checkpoint, *args, **kwargs):
        try:
            return resume(checkpoint, *args, **kwargs)
        except Exception as err:
            problem = incomplete_archive(checkpoint)
            if problem is None:
                raise  # a complete archive: the error is about something else
            raise CheckpointError(_unreadable_checkpoint_message(Path(checkpoint), problem)) from err

    wrapper.names_unreadable_checkpoints = True
    return wrapper


# --------------------------------------------------------------------------
# Installing into ESPnet's trainer
# --------------------------------------------------------------------------
def install(trainer_module=None) -> None:
    """Atomic checkpoint writes and a clear error on an unreadable checkpoint,
    for ESPnet's trainer module (``espnet2.train.trainer`` unless given).

    Idempotent. Where the module has no ``torch`` or no ``Trainer.resume`` (an
    ESPnet that saves or resumes another way), that part is left out and ESPnet
    runs as it is: registering the plugin never fails for it.
    """
    if trainer_module is None:
        try:
            from espnet2.train import trainer as trainer_module
        except ModuleNotFoundError:
            _LOG.info("No espnet2.train.trainer: checkpoint writes left as they are")
            return
    torch_module = getattr(trainer_module, "torch", None)
    if isinstance(torch_module, TorchWithAtomicSave):
        pass
    elif callable(getattr(torch_module, "save", None)):
        trainer_module.torch = TorchWithAtomicSave(torch_module)
    else:
        _LOG.info("%s has no torch.save: checkpoint writes left as they are",
                  trainer_module.__name__)

    trainer_class = getattr(trainer_module, "Trainer", None)
    resume = getattr(trainer_class, "resume", None)
    if resume is None or getattr(resume, "names_unreadable_checkpoints", False):
        return
    # ``resume`` is a staticmethod (202511, 202611); a classmethod or plain
    # method would take the class or instance first, which the wrapper does
    # not expect: those are left alone.
    if isinstance(trainer_class.__dict__.get("resume"), staticmethod):
        trainer_class.resume = staticmethod(_naming_unreadable_checkpoints(resume))
