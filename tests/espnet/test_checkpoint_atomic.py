"""ESPnet's trainer writes its checkpoints atomically once the plugin is registered.

``Trainer.run`` writes ``checkpoint.pth`` and ``<epoch>epoch.pth`` with
``torch.save`` in place; :func:`espnet_gmot.espnet.registry.register` makes the
trainer module's ``torch.save`` write a temporary file and rename it onto the
target. Every failure below is also run through a plain in-place ``torch.save``,
which must lose the previous checkpoint: that shows the failure reaches the
write, so the atomic write keeping the checkpoint is what the test measures.
"""

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from espnet_gmot import atomic
from espnet_gmot.espnet import checkpoint
from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import make_tiny_bert, make_tiny_corpus, tiny_gmot_config_text

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trainer():
    """``espnet2.train.trainer`` after the plugin registered."""
    from espnet2.train import trainer

    from espnet_gmot.espnet.registry import register

    register()
    return trainer


def temporaries(directory: Path, name: str = "checkpoint.pth"):
    return sorted(directory.glob(f".{name}.tmp-*"))


def previous_checkpoint(path: Path) -> bytes:
    """A complete checkpoint at ``path`` (an epoch's worth of tensors); its bytes."""
    torch.save({"epoch": 1, "weights": torch.arange(50000, dtype=torch.float32)}, path)
    return path.read_bytes()


def new_state(size: int = 1 << 20):
    """What the next epoch writes: ``size`` float32 values over several tensors."""
    return {"epoch": 2, **{f"w{k}": torch.full((size // 8,), float(k)) for k in range(8)}}


class Unpicklable:
    """Raises ``exc`` when pickled, recording the temporary files that exist then."""

    def __init__(self, exc, directory):
        self.exc, self.directory, self.seen = exc, directory, None

    def __reduce__(self):
        self.seen = {p.name: p.stat().st_size for p in temporaries(self.directory)}
        raise self.exc("cannot pickle this")


class FillingDisk:
    """A binary file that takes ``room`` bytes, then fails with ENOSPC mid-write."""

    def __init__(self, f, room):
        self.f, self.room, self.written = f, room, 0

    def write(self, data):
        data = bytes(data)
        if self.written + len(data) > self.room:
            part = data[: self.room - self.written]
            self.f.write(part)
            self.written += len(part)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.f.write(data)

    def __getattr__(self, name):  # flush, fileno, close
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


# --- registration --------------------------------------------------------------


def test_register_makes_only_the_trainers_save_atomic(trainer):
    from espnet2.train.trainer import Trainer

    from espnet_gmot.espnet.registry import register

    proxy, resume = trainer.torch, Trainer.resume
    assert isinstance(proxy, checkpoint.TorchWithAtomicSave)
    assert proxy._torch is torch  # wrapped once, around torch itself
    assert torch.save.__module__ == "torch.serialization"  # torch.save itself untouched
    for name in ("nn", "optim", "cuda", "distributed", "no_grad", "Tensor", "__version__"):
        assert getattr(proxy, name) is getattr(torch, name), name
    assert "save" in dir(proxy) and "nn" in dir(proxy)
    assert resume.names_unreadable_checkpoints
    assert not getattr(resume.__wrapped__, "names_unreadable_checkpoints", False)
    register()  # idempotent
    assert trainer.torch is proxy and Trainer.resume is resume


def test_install_leaves_a_trainer_module_without_torch_or_resume_alone():
    import types

    bare = types.ModuleType("trainer_without_torch")
    checkpoint.install(bare)
    assert not hasattr(bare, "torch")

    class Trainer:
        @classmethod
        def resume(cls, checkpoint):
            return checkpoint

    other = types.ModuleType("trainer_saving_otherwise")
    other.torch, other.Trainer = object(), Trainer
    checkpoint.install(other)
    assert type(other.torch) is object
    assert Trainer.resume("x") == "x" and not hasattr(Trainer.resume, "names_unreadable_checkpoints")


def test_a_save_puts_a_new_file_in_place_of_the_checkpoint(trainer, tmp_path):
    path = tmp_path / "checkpoint.pth"
    previous_checkpoint(path)
    inode = path.stat().st_ino
    state = new_state()
    trainer.torch.save(state, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state if k != "epoch")
    assert path.stat().st_ino != inode  # renamed into place, not rewritten
    assert temporaries(tmp_path) == []
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the mode of a plain torch.save
    link = tmp_path / "link.pth"
    link.symlink_to("checkpoint.pth")
    trainer.torch.save({"epoch": 3}, link)  # as in place: the file linked to is replaced
    assert link.is_symlink() and torch.load(path, weights_only=True) == {"epoch": 3}
    assert temporaries(tmp_path) == []
    buffer = io.BytesIO()
    trainer.torch.save(state, buffer)  # a file object: torch.save unchanged
    assert torch.load(io.BytesIO(buffer.getvalue()))["epoch"] == 2
    assert temporaries(tmp_path) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- failures in the middle of the write ---------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickling_that_fails_keeps_the_previous_checkpoint(trainer, tmp_path, exc, zip_format):
    """The zip format (the trainer's) pickles before it writes: the failure comes
    with the temporary file open (an in-place save has truncated the target by
    then). The legacy format pickles into the file: with protocol 4 the 1 MB
    ``blob`` is on disk before the failing object."""
    path = tmp_path / "checkpoint.pth"
    before = previous_checkpoint(path)
    bad = Unpicklable(exc, tmp_path)
    obj = {**new_state(), "blob": bytes(1 << 20), "bad": bad}
    with pytest.raises(exc, match="cannot pickle"):
        trainer.torch.save(obj, path, pickle_protocol=4, _use_new_zipfile_serialization=zip_format)
    assert path.read_bytes() == before
    assert temporaries(tmp_path) == []
    assert len(bad.seen) == 1, bad.seen  # the temporary file was there when it failed
    if not zip_format:
        assert list(bad.seen.values())[0] > 1 << 20  # part of the checkpoint was written

    control = tmp_path / "in_place.pth"
    previous_checkpoint(control)
    with pytest.raises(exc):
        torch.save({**obj, "bad": Unpicklable(exc, tmp_path)}, control, pickle_protocol=4,
                   _use_new_zipfile_serialization=zip_format)
    assert control.read_bytes() != before  # in place, the previous checkpoint is gone


def raised_enospc(err: BaseException) -> bool:
    """Whether ``err`` or an exception it was raised from is ENOSPC (torch's
    zip writer raises its own RuntimeError on the way out)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False


def test_a_disk_that_fills_mid_write_keeps_the_previous_checkpoint(trainer, tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    before = previous_checkpoint(path)
    files = []

    def filling_open(file, mode="r", *args, **kwargs):
        files.append(FillingDisk(open(file, mode, *args, **kwargs), room=1 << 20))
        return files[-1]

    monkeypatch.setattr(atomic, "open", filling_open, raising=False)
    with pytest.raises(Exception) as err:
        trainer.torch.save(new_state(4 << 20), path)  # 4M values, 16 MB
    assert raised_enospc(err.value), repr(err.value)
    assert len(files) == 1 and files[0].written == 1 << 20  # 1 MB of it was written
    assert path.read_bytes() == before
    assert temporaries(tmp_path) == []

    control = tmp_path / "in_place.pth"
    previous_checkpoint(control)
    with pytest.raises(Exception) as err:
        torch.save(new_state(4 << 20), FillingDisk(open(control, "wb"), room=1 << 20))
    assert raised_enospc(err.value)
    with pytest.raises(RuntimeError):
        torch.load(control, weights_only=True)


def test_a_disk_that_fills_at_fsync_keeps_the_previous_checkpoint(trainer, tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    before = previous_checkpoint(path)
    synced = []

    def full_fsync(fd):
        synced.append(os.fstat(fd).st_size)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_fsync)
    with pytest.raises(OSError) as err:
        trainer.torch.save(new_state(), path)
    assert err.value.errno == errno.ENOSPC  # raised after torch's writer closed
    assert synced and synced[0] > 4 << 20  # the whole new checkpoint was written first
    assert path.read_bytes() == before
    assert temporaries(tmp_path) == []


def test_the_next_save_removes_what_a_dead_writer_left(trainer, tmp_path):
    path = tmp_path / "checkpoint.pth"
    previous_checkpoint(path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".checkpoint.pth.tmp-{dead.pid}-0badc0de"
    live = tmp_path / f".checkpoint.pth.tmp-{os.getppid()}-0badc0de"  # a writer still running
    other = tmp_path / f".1epoch.pth.tmp-{dead.pid}-0badc0de"  # another file's: its own save cleans it
    for p in (left, live, other):
        p.write_bytes(b"partial")
    trainer.torch.save(new_state(), path)
    assert not left.exists()
    assert live.exists() and other.exists()
    assert torch.load(path, weights_only=True)["epoch"] == 2


# --- resuming from a checkpoint that cannot be read ---------------------------


def _resume(trainer, path, model):
    from espnet2.train.reporter import Reporter

    reporter = Reporter()
    trainer.Trainer.resume(checkpoint=path, model=model, reporter=reporter,
                           optimizers=[torch.optim.Adam(model.parameters())], schedulers=[None],
                           scaler=None, ngpu=0)
    return reporter


def _save_training_state(trainer, path, model, epoch):
    from espnet2.train.reporter import Reporter

    reporter = Reporter()
    for _ in range(epoch):
        reporter.set_epoch(reporter.get_epoch() + 1)
    trainer.torch.save({"model": model.state_dict(), "reporter": reporter.state_dict(),
                        "optimizers": [torch.optim.Adam(model.parameters()).state_dict()],
                        "schedulers": [None], "scaler": None}, path)


def test_resume_names_a_truncated_checkpoint_and_says_what_to_do(trainer, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "checkpoint.pth"
    _save_training_state(trainer, path, model, epoch=3)
    resumed = torch.nn.Linear(3, 2)
    assert _resume(trainer, path, resumed).get_epoch() == 3
    assert torch.equal(resumed.weight, model.weight)

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what an in-place write cut short leaves
    with pytest.raises(checkpoint.CheckpointError) as err:
        _resume(trainer, path, torch.nn.Linear(3, 2))
    message = str(err.value)
    assert str(path) in message and "not a complete zip archive" in message
    assert "Move it aside" in message and "--init_param" not in message
    assert isinstance(err.value.__cause__, RuntimeError)  # torch's own error, kept as the cause

    (tmp_path / "latest.pth").symlink_to("3epoch.pth")
    (tmp_path / "3epoch.pth").write_bytes(b"")
    path.write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError, match="--init_param .*latest.pth"):
        _resume(trainer, path, torch.nn.Linear(3, 2))


def test_resume_names_the_archive_an_in_place_save_left_after_an_error(trainer, tmp_path):
    path = tmp_path / "checkpoint.pth"
    with pytest.raises(RuntimeError):
        torch.save({"bad": Unpicklable(RuntimeError, tmp_path)}, path)  # in place
    with pytest.raises(checkpoint.CheckpointError, match="without data.pkl"):
        _resume(trainer, path, torch.nn.Linear(3, 2))


def test_resume_leaves_errors_about_a_complete_checkpoint_as_they_are(trainer, tmp_path):
    path = tmp_path / "checkpoint.pth"
    _save_training_state(trainer, path, torch.nn.Linear(3, 2), epoch=1)
    with pytest.raises(RuntimeError, match="size mismatch") as err:
        _resume(trainer, path, torch.nn.Linear(4, 2))
    assert not isinstance(err.value, checkpoint.CheckpointError)


# --- a real SIGKILL during the write ------------------------------------------

# Writes a 20 MB checkpoint (320 tensors of 64 KB) through a file that sleeps
# 50 ms after each tensor, writing ``marker`` after 100 of them (6.5 MB), to be
# killed there. ``atomic``: the trainer
# module's torch.save after register(); ``in_place``: torch.save onto the target.
KILLED_WRITER = r"""
import os, sys, time
from pathlib import Path
import torch

mode, target, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

class SlowFile:
    def __init__(self, f):
        self.f, self.writes = f, 0
    def write(self, data):
        n = self.f.write(data)
        self.f.flush()
        if len(memoryview(data).cast("B")) >= 1 << 16:  # a tensor's bytes
            self.writes += 1
            if self.writes == 100:
                marker.write_text(self.f.name)
            time.sleep(0.05)
        return n
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

state = {"epoch": 2, **{f"w{k}": torch.full((16384,), float(k)) for k in range(320)}}
if mode == "atomic":
    from espnet_gmot import atomic
    from espnet_gmot.espnet.registry import register
    register()
    from espnet2.train import trainer
    atomic.open = lambda *args, **kwargs: SlowFile(open(*args, **kwargs))
    trainer.torch.save(state, target)
else:
    torch.save(state, SlowFile(open(target, "wb")))
print("finished the write", flush=True)
"""


def kill_mid_write(tmp_path: Path, mode: str):
    """The killed writer's (path of the file it was writing, its pid, its output)."""
    path, marker = tmp_path / "checkpoint.pth", tmp_path / "marker"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, mode, str(path), str(marker)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        time.sleep(0.05)  # the marker's text is written
        writing = Path(marker.read_text())
        if mode == "atomic":
            assert temporaries(tmp_path) == [writing]  # the kill comes while it exists
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
    output = proc.stdout.read().decode()
    assert "finished the write" not in output
    return writing, proc.pid


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint(trainer, tmp_path):
    path = tmp_path / "checkpoint.pth"
    before = previous_checkpoint(path)
    writing, pid = kill_mid_write(tmp_path, "atomic")
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1
    # a SIGKILL cannot clean up: the partial temporary file stays until the
    # next save of the same checkpoint removes it
    assert writing.name.startswith(f".checkpoint.pth.tmp-{pid}-")
    assert 100 << 16 < writing.stat().st_size < 20 << 20
    trainer.torch.save(new_state(), path)
    assert temporaries(tmp_path) == []
    assert torch.load(path, weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_a_writer_killed_mid_write_in_place_loses_the_checkpoint(trainer, tmp_path):
    """The control: the same kill of a plain torch.save; resume then names the file."""
    path = tmp_path / "checkpoint.pth"
    before = previous_checkpoint(path)
    writing, _ = kill_mid_write(tmp_path, "in_place")
    assert writing == path and path.read_bytes() != before
    assert 100 << 16 < path.stat().st_size < 20 << 20
    with pytest.raises((RuntimeError, OSError)):
        torch.load(path, weights_only=False)
    expected = re.escape(f"Cannot resume from {path}: it is not a complete")
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        _resume(trainer, path, torch.nn.Linear(3, 2))


# --- a real training -------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_training_puts_each_checkpoint_in_place_by_a_rename(tmp_path):
    corpus = make_tiny_corpus(tmp_path)
    config = tmp_path / "tiny_gmot.yaml"
    config.write_text(tiny_gmot_config_text(make_tiny_bert(tmp_path / "bert"), max_epoch=2))
    exp = tmp_path / "exp"
    exp.mkdir()
    stats = pipeline.collect_stats(exp, config, corpus)
    out, record = exp / "model", exp / "record.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    pipeline.run("espnet2.bin.asr_train", pipeline.train_args(out, config, corpus, stats),
                 exp / "train.log", command=[sys.executable, "-m", "tests.helpers.checkpoint_probe", record],
                 cwd=REPO, env=env)
    seen = json.loads(record.read_text())
    assert seen["trainer_torch"] == "TorchWithAtomicSave"
    assert seen["torch_save_module"] == "torch.serialization"
    replaced = {}
    for source, target in seen["replaced"]:
        source, target = Path(source), Path(target)
        if target.parent == out:
            assert source.parent == out
            assert source.name.startswith(f".{target.name}.tmp-{seen['pid']}-"), source
            replaced[target.name] = replaced.get(target.name, 0) + 1
    # both epochs' checkpoints and models went in by a rename
    assert replaced == {"checkpoint.pth": 2, "1epoch.pth": 1, "2epoch.pth": 1}, seen["replaced"]
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == []
    states = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert states["reporter"]["epoch"] == 2
    model = torch.load(out / "2epoch.pth", map_location="cpu", weights_only=True)
    assert states["model"].keys() == model.keys()
    assert all(torch.equal(states["model"][k], model[k]) for k in model)
