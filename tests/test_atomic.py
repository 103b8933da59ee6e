"""The package's one atomic-write helper (espnet_gmot.atomic)."""

import errno
import os
import subprocess
import sys

import pytest

from espnet_gmot import atomic


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_a_finished_block_replaces_the_file(tmp_path, mode):
    path = tmp_path / "out"
    path.write_text("old")
    with atomic.atomic_write(path, mode, encoding="utf-8" if mode == "w" else None) as file:
        file.write(b"new \xe4\xbd\xa0" if mode == "wb" else "new 你")
        assert path.read_text() == "old"  # nothing visible before the block ends
        assert leftovers(tmp_path) and leftovers(tmp_path)[0].startswith(f".out.tmp-{os.getpid()}-")
    assert path.read_text(encoding="utf-8") == "new 你"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", [RuntimeError("pickling failed"), KeyboardInterrupt(),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_failed_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path, failure):
    path = tmp_path / "out.json"
    path.write_text('{"done": true}\n')
    with pytest.raises(type(failure)):
        with atomic.atomic_write(path, "w", encoding="utf-8") as file:
            file.write('{"done": fal')
            raise failure
    assert path.read_text() == '{"done": true}\n'
    assert leftovers(tmp_path) == []


def test_durable_writes_and_the_text_and_bytes_helpers(tmp_path):
    atomic.atomic_write_text(tmp_path / "a.txt", "他是\n", durable=True)
    atomic.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "他是\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert leftovers(tmp_path) == []


def test_missing_parent_directories_are_created(tmp_path):
    atomic.atomic_write_text(tmp_path / "data_aishell" / "transcript" / "t.txt", "u1 他\n")
    assert (tmp_path / "data_aishell" / "transcript" / "t.txt").read_text(encoding="utf-8") == "u1 他\n"


def test_a_symbolic_link_keeps_pointing_where_it_did(tmp_path):
    (tmp_path / "3epoch.pth").write_text("epoch 3")
    (tmp_path / "latest.pth").symlink_to("3epoch.pth")
    atomic.atomic_write_text(tmp_path / "latest.pth", "epoch 3, rewritten")
    assert (tmp_path / "latest.pth").is_symlink()
    assert (tmp_path / "3epoch.pth").read_text() == "epoch 3, rewritten"


def test_appending_or_reading_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="mode 'wb' or 'w', got 'a'"):
        with atomic.atomic_write(tmp_path / "x", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_writers_go_live_ones_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    path = tmp_path / "checkpoint.pth"
    names = {
        "dead": f".checkpoint.pth.tmp-{dead}-0a1b",
        "live": f".checkpoint.pth.tmp-{os.getppid()}-0a1b",
        "other target": f".other.pth.tmp-{dead}-0a1b",
        "not ours": f".checkpoint.pth.tmp-{dead}-notahexname",
    }
    for name in names.values():
        (tmp_path / name).write_text("partial")
    atomic.remove_stale_temporaries(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        names[k] for k in ("live", "other target", "not ours"))
    assert atomic.process_alive(os.getpid()) and not atomic.process_alive(int(dead))
