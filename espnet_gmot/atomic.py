"""Files that appear whole or not at all: the package's one atomic-write helper.

Every output a later step (or a resumed run) reads is written to a temporary
file beside its target, ``.<name>.tmp-<pid>-<random>``, and renamed onto it
(``os.replace``, atomic on POSIX): a reader sees the previous file or the new
one, never part of one, whether the writer fails, runs out of disk space or is
killed. ``durable=True`` also fsyncs the file and its directory, so the rename
survives a power loss (training checkpoints); other outputs can be rebuilt and
skip that cost.

Dependency-free on purpose: the Kaldi data helpers, the PLM cache, the ESPnet
glue and the recipes' scripts all write through it.
"""

import contextlib
import logging
import os
import re
import secrets
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, os.PathLike]

_LOG = logging.getLogger(__name__)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_name(path: Path) -> Path:
    """``.<name>.tmp-<pid>-<random>`` beside ``path``: hidden, and naming its writer."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_temporaries(path: PathLike) -> None:
    """Remove the temporary files of ``path`` whose writer is gone: a process
    killed outright (SIGKILL) cannot clean up after itself."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(\d+)-[0-9a-f]+")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match[1])
        if pid == os.getpid() or process_alive(pid):
            continue
        entry.unlink(missing_ok=True)
        _LOG.warning("Removed %s, left by an interrupted run", entry)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every filesystem can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str = None, durable: bool = False) -> Iterator[IO]:
    """A file (``mode`` ``"wb"`` or ``"w"``) whose content appears at ``path``
    whole when the block ends, or not at all.

    On any exception (a full disk's ``OSError`` ENOSPC, ``KeyboardInterrupt``
    included) the temporary file is removed and the exception re-raised:
    ``path`` keeps its previous content. A symbolic link keeps pointing where
    it did: the file it points to is replaced, as writing in place would.
    Missing parent directories are created.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    file = open(tmp, mode.replace("w", "x"), encoding=encoding if mode == "w" else None)
    try:
        with file:
            yield file
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_directory(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes, durable: bool = False) -> None:
    """``data`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "wb", durable=durable) as file:
        file.write(data)


def atomic_write_text(path: PathLike, text: str, durable: bool = False) -> None:
    """UTF-8 ``text`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "w", encoding="utf-8", durable=durable) as file:
        file.write(text)
