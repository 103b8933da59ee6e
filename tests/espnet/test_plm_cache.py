"""The plm_states cache: provenance, resumption, paths, coverage, sharing, float16."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import kaldiio.highlevel
import numpy as np
import pytest
import torch
import yaml

from espnet_gmot.bin import plm_cache_args
from espnet_gmot.espnet.plm_cache import (
    PLMCacheError,
    check_cache_against_text,
    check_plm_cache_covers_data,
    data_path_argument,
    write_plm_cache,
)
from espnet_gmot.kaldi_data import read_kaldi_map, write_kaldi_map
from espnet_gmot.transfer import PLMTeacher
from tests.helpers.tiny_asr import make_tiny_bert

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert48") / "bert48", hidden_size=48)


def write_text(path, utts):
    write_kaldi_map(path, utts)
    return path


def teacher_states(teacher, sentence):
    states, lengths, _ = teacher.encode([sentence], torch.device("cpu"))
    return states[0, : lengths[0]].numpy()


def shard_scps(out):
    return sorted((out / "shards").glob("*.scp"))


def snapshot(directory):
    return {p: p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def dump(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "espnet_gmot.bin.dump_plm_states", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd,
    )


SENTENCES = {f"u{k:02d}": s for k, s in enumerate(["他是老师", "我们去学校", "", "你好世界", "今天很好"])}


def test_cache_writes_resumes_and_matches_the_teacher(tmp_path, bert):
    text = write_text(tmp_path / "text", SENTENCES)
    teacher = PLMTeacher(str(bert))
    out = tmp_path / "cache"
    scp = write_plm_cache(text, out, teacher, batch_size=2, shard_size=2)
    cached = dict(kaldiio.load_scp(str(scp)))
    assert sorted(cached) == sorted(SENTENCES)
    for utt, sentence in SENTENCES.items():
        np.testing.assert_allclose(cached[utt], teacher_states(teacher, sentence), atol=1e-6)
    # Interrupted run: one shard lost its scp (its ark may be half-written).
    shards = shard_scps(out)
    assert len(shards) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()
    write_plm_cache(text, out, teacher, batch_size=2, shard_size=2)
    assert shards[1].exists()
    assert shards[0].stat().st_mtime_ns == mtimes[shards[0]]  # finished shards kept
    assert shards[2].stat().st_mtime_ns == mtimes[shards[2]]
    assert sorted(dict(kaldiio.load_scp(str(scp)))) == sorted(SENTENCES)


def test_resuming_with_another_plm_is_refused_and_changes_nothing(tmp_path, bert, other_bert):
    text = write_text(tmp_path / "text", SENTENCES)
    out = tmp_path / "cache"
    write_plm_cache(text, out, PLMTeacher(str(bert)))
    before = snapshot(out)
    with pytest.raises(PLMCacheError) as err:
        write_plm_cache(text, out, PLMTeacher(str(other_bert)))
    message = str(err.value)
    assert f"--plm '{bert}'" in message and f"--plm {bert} --output_dir {out}" in message
    assert "hidden_size 32 there, 48 now" in message
    assert snapshot(out) == before


def test_same_name_with_other_weights_is_refused(tmp_path):
    bert = make_tiny_bert(tmp_path / "bert")
    text = write_text(tmp_path / "text", SENTENCES)
    write_plm_cache(text, tmp_path / "cache", PLMTeacher(str(bert)))
    # The PLM directory is retrained in place: same name, same size, other weights.
    from transformers import BertModel

    model = BertModel.from_pretrained(bert)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[5] += 1.0
    model.save_pretrained(bert)
    with pytest.raises(PLMCacheError, match="plm_fingerprint"):
        write_plm_cache(text, tmp_path / "cache", PLMTeacher(str(bert)))


def test_resuming_with_another_dtype_is_refused(tmp_path, bert):
    text = write_text(tmp_path / "text", SENTENCES)
    write_plm_cache(text, tmp_path / "cache", PLMTeacher(str(bert)), dtype="float16")
    with pytest.raises(PLMCacheError, match=r"--dtype float16\)?.*'float16' there, 'float32' now"):
        write_plm_cache(text, tmp_path / "cache", PLMTeacher(str(bert)))


def test_cache_of_an_older_version_is_refused(tmp_path, bert):
    text = write_text(tmp_path / "text", SENTENCES)
    out = tmp_path / "cache"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "plm_states.0.scp").write_text("u00 shards/plm_states.0.ark:6\n")
    (out / "plm").write_text("bert-base-chinese\n")
    with pytest.raises(PLMCacheError, match=rf"older espnet-gmot.*rm -r {out}"):
        write_plm_cache(text, out, PLMTeacher(str(bert)))


def test_changed_transcript_is_recomputed_never_stale(tmp_path, bert):
    teacher = PLMTeacher(str(bert))
    out = tmp_path / "cache"
    write_plm_cache(write_text(tmp_path / "text", SENTENCES), out, teacher)
    first_shards = shard_scps(out)
    first = {p: p.read_bytes() for p in first_shards}
    changed = dict(SENTENCES, u01="他们在北京")
    text = write_text(tmp_path / "text", changed)
    with pytest.raises(PLMCacheError, match=r"transcripts of 1 utterances .* \(u01\).*dump_plm_states"):
        check_cache_against_text(out / "plm_states.scp", text)
    scp = write_plm_cache(text, out, teacher)
    assert {p: p.read_bytes() for p in first_shards} == first  # nothing rewritten
    assert len(shard_scps(out)) == len(first_shards) + 1  # only the new transcript computed
    cached = dict(kaldiio.load_scp(str(scp)))
    for utt, sentence in changed.items():
        np.testing.assert_allclose(cached[utt], teacher_states(teacher, sentence), atol=1e-6)
    check_cache_against_text(scp, text)


@pytest.mark.slow  # runs the dump command in subprocesses
def test_scp_is_read_from_any_working_directory(tmp_path, bert):
    dump_dir = tmp_path / "recipe"
    dump_dir.mkdir()
    write_text(dump_dir / "text", {"a": "他是", "b": "我们"})
    done = dump("--text", "text", "--plm", bert, "--output_dir", "dump/plm", cwd=dump_dir)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    read = subprocess.run(
        [sys.executable, "-c",
         "import kaldiio, sys; print(sorted((k, v.shape) for k, v in kaldiio.load_scp(sys.argv[1]).items()))",
         str(dump_dir / "dump/plm/plm_states.scp")],
        capture_output=True, text=True, cwd=elsewhere,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "[('a', (4, 32)), ('b', (4, 32))]"


def test_speed_perturbed_copies_share_one_entry(tmp_path, bert):
    from espnet2.train.dataset import ESPnetDataset

    utts = {"s1-a": "他是老师", "s1-b": "我们去学校"}
    utts.update({f"{prefix}{u}": t for u, t in list(utts.items()) for prefix in ("sp0.9-", "sp1.1-")})
    text = write_text(tmp_path / "text", utts)
    teacher = PLMTeacher(str(bert))
    scp = write_plm_cache(text, tmp_path / "cache", teacher)
    locations = read_kaldi_map(scp)
    assert sorted(locations) == sorted(utts)
    assert locations["sp0.9-s1-a"] == locations["s1-a"] == locations["sp1.1-s1-a"]
    assert locations["s1-a"] != locations["s1-b"]
    stored = [k for p in shard_scps(tmp_path / "cache") for k in kaldiio.load_scp(str(p))]
    assert len(stored) == 2
    dataset = ESPnetDataset([(str(scp), "plm_states", "kaldi_ark")])
    for utt, sentence in utts.items():
        np.testing.assert_allclose(dataset[utt][1]["plm_states"], teacher_states(teacher, sentence), atol=1e-6)


def test_float16_cache_is_half_the_size_and_read_as_float32(tmp_path, bert):
    from espnet2.train.dataset import ESPnetDataset

    utts = {f"u{k}": s * 3 for k, s in enumerate(["他是老师", "我们去学校", "你好世界"])}
    text = write_text(tmp_path / "text", utts)
    teacher = PLMTeacher(str(bert))
    sizes = {}
    for dtype, data_type, stored in (("float32", "kaldi_ark", "shards/*.ark"),
                                     ("float16", "npy", "states/*.npy")):
        scp = write_plm_cache(text, tmp_path / dtype, teacher, dtype=dtype)
        sizes[dtype] = sum(p.stat().st_size for p in (tmp_path / dtype).glob(stored))
        manifest = json.loads((tmp_path / dtype / "plm_cache.json").read_text())
        assert (manifest["dtype"], manifest["data_type"]) == (dtype, data_type)
        assert data_path_argument(scp) == (
            f"--train_data_path_and_name_and_type {scp},plm_states,{data_type}")
        # ESPnet's own loader of that type: kaldiio in 202511, omniio in 202611.
        dataset = ESPnetDataset([(str(scp), "plm_states", data_type)])
        for utt, sentence in utts.items():
            value = dataset[utt][1]["plm_states"]
            assert value.dtype == np.float32
            tolerance = 1e-6 if dtype == "float32" else 5e-3
            np.testing.assert_allclose(value, teacher_states(teacher, sentence), atol=tolerance, rtol=tolerance)
    assert 0.45 < sizes["float16"] / sizes["float32"] < 0.6


def test_float16_npy_cache_resumes_entry_by_entry(tmp_path, bert):
    utts = {f"u{k}": s for k, s in enumerate(["他是老师", "我们去学校", "你好世界", "他是老师"])}
    text = write_text(tmp_path / "text", utts)
    teacher = PLMTeacher(str(bert))
    out = tmp_path / "cache"
    write_plm_cache(text, out, teacher, dtype="float16", batch_size=2)
    entries = sorted((out / "states").glob("*.npy"))
    assert len(entries) == 3  # the repeated sentence is stored once
    assert not list((out / "states").glob("*.tmp")) and not (out / "shards").exists()
    kept = {p: p.stat().st_mtime_ns for p in entries}
    entries[1].unlink()
    (out / "states" / "partial.npy.tmp").write_bytes(b"\x93NUMPY interrupted")
    write_plm_cache(text, out, teacher, dtype="float16", batch_size=2)
    assert entries[1].exists() and not list((out / "states").glob("*.tmp"))
    for path in (entries[0], entries[2]):
        assert path.stat().st_mtime_ns == kept[path]  # finished entries are not recomputed
    scp = read_kaldi_map(out / "plm_states.scp")
    assert sorted(scp) == sorted(utts) and scp["u0"] == scp["u3"]
    for utt, sentence in utts.items():
        np.testing.assert_allclose(np.load(scp[utt]), teacher_states(teacher, sentence), atol=5e-3, rtol=5e-3)


def test_float16_cache_of_the_kaldi_ark_layout_is_refused(tmp_path, bert):
    text = write_text(tmp_path / "text", {"u0": "他是老师"})
    teacher = PLMTeacher(str(bert))
    out = tmp_path / "cache"
    write_plm_cache(text, out, teacher, dtype="float16")
    manifest = json.loads((out / "plm_cache.json").read_text())
    del manifest["data_type"]  # as an earlier espnet-gmot wrote it
    (out / "plm_cache.json").write_text(json.dumps(manifest))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(PLMCacheError, match="earlier espnet-gmot .* kaldi_ark loader cannot read.* Remove it"):
        write_plm_cache(text, out, teacher, dtype="float16")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.slow  # builds ESPnet's asr_train parser
def test_training_refuses_a_cache_that_misses_utterances(tmp_path, bert):
    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们", "c": "你好"})
    partial = write_text(tmp_path / "partial_text", {"a": "他是"})
    scp = write_plm_cache(partial, tmp_path / "cache", PLMTeacher(str(bert)))
    args = ["--train_data_path_and_name_and_type", f"{tmp_path}/wav.scp,speech,sound",
            "--train_data_path_and_name_and_type", f"{text},text,text",
            f"--train_data_path_and_name_and_type={scp},plm_states,kaldi_ark"]
    with pytest.raises(SystemExit, match=rf"lacks 2 of the 3 utterances .* \(b, c\).*--plm {bert} "):
        check_plm_cache_covers_data(args)
    full = write_plm_cache(text, tmp_path / "cache_full", PLMTeacher(str(bert)))
    check_plm_cache_covers_data(args[:-1] + [f"--train_data_path_and_name_and_type={full},plm_states,kaldi_ark"])


@pytest.mark.slow  # builds ESPnet's asr_train parser
def test_training_refuses_a_cache_read_with_the_wrong_data_type(tmp_path, bert):
    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们"})
    scp = write_plm_cache(text, tmp_path / "cache", PLMTeacher(str(bert)), dtype="float16")
    args = ["--train_data_path_and_name_and_type", f"{tmp_path}/wav.scp,speech,sound",
            "--train_data_path_and_name_and_type", f"{text},text,text"]
    with pytest.raises(SystemExit, match=rf"{scp},plm_states,kaldi_ark: that cache holds float16 "
                       rf"states, which ESPnet reads as npy: write `--train_data_path_and_name_and_type {scp},plm_states,npy`"):
        check_plm_cache_covers_data(args + [f"--train_data_path_and_name_and_type={scp},plm_states,kaldi_ark"])
    check_plm_cache_covers_data(args + [f"--train_data_path_and_name_and_type={scp},plm_states,npy"])


@pytest.mark.slow  # builds ESPnet's asr_train parser
def test_coverage_is_checked_for_data_paths_from_the_config_yaml(tmp_path, bert):
    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们"})
    scp = write_plm_cache(write_text(tmp_path / "partial", {"a": "他是"}), tmp_path / "cache",
                          PLMTeacher(str(bert)))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "train_data_path_and_name_and_type": [
            [f"{tmp_path}/wav.scp", "speech", "sound"], [str(text), "text", "text"],
            [str(scp), "plm_states", "kaldi_ark"]],
    }))
    with pytest.raises(SystemExit, match=r"lacks 1 of the 2 utterances .* \(b\)"):
        check_plm_cache_covers_data(["--config", str(config)])
    # The same through the training entry point, before ESPnet starts.
    from espnet_gmot.bin.asr_train import main

    with pytest.raises(SystemExit, match=r"lacks 1 of the 2 utterances"):
        main(["--config", str(config), "--output_dir", str(tmp_path / "exp")])
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow  # runs the dump command in subprocesses
def test_dump_command_line(tmp_path, bert, other_bert):
    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们"})
    done = dump("--text", text, "--plm", bert, "--output_dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert sorted(dict(kaldiio.load_scp(str(tmp_path / "out" / "plm_states.scp")))) == ["a", "b"]
    other = dump("--text", text, "--plm", other_bert, "--output_dir", tmp_path / "out")
    assert other.returncode != 0 and f"--plm {bert} --output_dir {tmp_path / 'out'}" in other.stderr
    missing = dump("--text", tmp_path / "nope", "--output_dir", tmp_path / "o2")
    assert missing.returncode != 0 and "no such file" in missing.stderr
    assert not (tmp_path / "o2").exists()
    empty = tmp_path / "empty_plm"
    empty.mkdir()
    no_plm = dump("--text", text, "--plm", empty, "--output_dir", tmp_path / "o3")
    assert no_plm.returncode != 0 and f"--plm '{empty}'" in no_plm.stderr and "it is empty" in no_plm.stderr


def test_a_half_precision_teacher_is_recorded_and_named_in_the_refusal(tmp_path, bert):
    from espnet_gmot.bin import dump_plm_states

    text = write_text(tmp_path / "text", {"a": "他是", "b": "我们"})
    out = tmp_path / "out"
    dump_plm_states.main([str(a) for a in [
        "--text", text, "--plm", bert, "--output_dir", out, "--plm_dtype", "bfloat16"]])
    manifest = json.loads((out / "plm_cache.json").read_text())
    assert manifest["plm_reading"]["dtype"] == "bfloat16"
    half = PLMTeacher(str(bert), dtype="bfloat16")
    assert manifest["plm_fingerprint"] == half.fingerprint()
    cached = dict(kaldiio.load_scp(str(out / "plm_states.scp")))
    assert np.array_equal(cached["a"], teacher_states(half, "他是"))
    before = snapshot(out)
    with pytest.raises(PLMCacheError) as err:
        write_plm_cache(text, out, PLMTeacher(str(bert)))  # the float32 teacher
    assert "plm_reading" in str(err.value) and "--plm_dtype bfloat16" in str(err.value)
    assert snapshot(out) == before


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_full_disk_names_the_output_keeps_finished_states_and_a_rerun_completes(
        tmp_path, bert, monkeypatch, dtype):
    """ENOSPC at the fifth entry (shards of 2 for kaldi_ark, one file per entry
    for npy): the error names the output, the finished entries stay, nothing
    partial is left, and the rerun gives the uninterrupted cache."""
    from espnet_gmot.bin import dump_plm_states

    utts = {f"u{k}": s for k, s in enumerate(["他是老师", "我们去学校", "你好世界", "今天很好",
                                              "他们是学生", "天气很好", "我爱学习", "老师好"])}
    text = write_text(tmp_path / "text", utts)
    out = tmp_path / "cache"
    args = ["--text", text, "--plm", bert, "--batch_size", 1, "--shard_size", 2, "--dtype", dtype]
    calls = []

    def failing(real):
        def write(target, *rest, **kwargs):
            calls.append(target)
            if len(calls) == 5:
                name = getattr(target, "name", target)  # a file object or a path
                raise OSError(errno.ENOSPC, "No space left on device", str(name))
            return real(target, *rest, **kwargs)
        return write

    if dtype == "float16":
        monkeypatch.setattr(np, "save", failing(np.save))
    else:
        # what kaldiio.WriteHelper calls
        monkeypatch.setattr(kaldiio.highlevel, "save_ark", failing(kaldiio.highlevel.save_ark))
    with pytest.raises(SystemExit) as exit_info:
        dump_plm_states.main([str(a) for a in [*args, "--output_dir", out]])
    message = str(exit_info.value.code)
    assert f"No space left on the device of {out.absolute()}" in message
    assert "it resumes from the states already written" in message
    assert not list(out.rglob("*.tmp*")) and not (out / "plm_states.scp").exists()
    if dtype == "float16":
        assert len(list((out / "states").glob("*.npy"))) == 4
    else:  # shards 0 and 1 finished, shard 2 (the failing one) removed
        assert [p.name for p in sorted((out / "shards").iterdir())] == [
            "states.0.ark", "states.0.scp", "states.1.ark", "states.1.scp"]

    monkeypatch.undo()
    dump_plm_states.main([str(a) for a in [*args, "--output_dir", out]])
    dump_plm_states.main([str(a) for a in [*args, "--output_dir", tmp_path / "whole"]])
    resumed = dict(kaldiio.load_scp(str(out / "plm_states.scp"))) if dtype == "float32" else {
        utt: np.load(path) for utt, path in read_kaldi_map(out / "plm_states.scp").items()}
    whole = dict(kaldiio.load_scp(str(tmp_path / "whole" / "plm_states.scp"))) if dtype == "float32" else {
        utt: np.load(path) for utt, path in read_kaldi_map(tmp_path / "whole" / "plm_states.scp").items()}
    assert sorted(resumed) == sorted(whole) == sorted(utts)
    for utt in utts:
        np.testing.assert_array_equal(resumed[utt], whole[utt])


@pytest.mark.slow  # runs the dump command in subprocesses
def test_sigkill_then_resume_gives_the_uninterrupted_cache(tmp_path, bert):
    from tests.helpers.tiny_asr import SENTENCES as CORPUS

    utts = {f"u{k:03d}": CORPUS[k % len(CORPUS)][: 1 + k % 5] + CORPUS[(3 * k) % len(CORPUS)] for k in range(150)}
    text = write_text(tmp_path / "text", utts)
    args = ["--text", text, "--plm", bert, "--batch_size", 1, "--shard_size", 2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "espnet_gmot.bin.dump_plm_states", *map(str, args), "--output_dir", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    while process.poll() is None and not (out / "shards" / "states.1.scp").exists():
        time.sleep(0.005)
    process.kill()
    process.wait()
    interrupted = process.returncode == -9
    assert dump(*args, "--output_dir", out).returncode == 0
    assert dump(*args, "--output_dir", tmp_path / "whole").returncode == 0
    resumed = dict(kaldiio.load_scp(str(out / "plm_states.scp")))
    whole = dict(kaldiio.load_scp(str(tmp_path / "whole" / "plm_states.scp")))
    assert sorted(resumed) == sorted(whole) == sorted(utts)
    for utt in utts:
        np.testing.assert_array_equal(resumed[utt], whole[utt])
    assert not list(out.rglob("*.tmp*"))
    assert interrupted, "the dump finished before it could be killed; make the text longer"


def test_plm_cache_args_command(tmp_path, capsys):
    """The training arguments of caches, as the recipe's local/plm_cache.sh prints them."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "plm_cache.json").write_text(json.dumps({"data_type": "npy"}))
    plm_cache_args.main(["--train", str(tmp_path / "train" / "plm_states.scp"),
                         "--valid", "dev/plm_states.scp"])
    assert capsys.readouterr().out == (
        f"--train_data_path_and_name_and_type {tmp_path}/train/plm_states.scp,plm_states,npy "
        "--valid_data_path_and_name_and_type dev/plm_states.scp,plm_states,kaldi_ark "
        "--allow_variable_data_keys true\n"
    )
    assert plm_cache_args.plm_cache_args(valid="v.scp") == [
        "--valid_data_path_and_name_and_type v.scp,plm_states,kaldi_ark", "--allow_variable_data_keys true"]
    with pytest.raises(SystemExit):
        plm_cache_args.main([])
