"""``model: gmot`` trained with DDP on two CPU workers (``torch.distributed.run``),
on one node and on two nodes of one worker each (this machine as both).

ESPnet 202511 spawns its own workers only for ``--ngpu N > 1`` (GPUs), but DDP
itself runs on CPU with the gloo backend, which is what this test uses:

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m espnet_gmot.bin.asr_train ... --ngpu 0 --dist_backend gloo \\
        --multiprocessing_distributed false

(through ``tests.helpers.ddp_probe``, which runs that module unchanged and
records what each worker saw, since ESPnet silences the logs of rank 1).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import espnet_pipeline as pipeline
from tests.helpers.tiny_asr import make_tiny_bert, make_tiny_corpus, tiny_gmot_config_text

pytestmark = pytest.mark.slow

CONF = Path(__file__).parent / "conf"
REPO = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny GM-OT data, config and stats, and one epoch in a single process."""
    root = tmp_path_factory.mktemp("distributed")
    corpus = make_tiny_corpus(root)
    bert = make_tiny_bert(root / "bert")
    config = root / "tiny_gmot.yaml"
    config.write_text(tiny_gmot_config_text(bert, max_epoch=1))
    exp = root / "exp"
    exp.mkdir()
    stats = pipeline.collect_stats(exp, config, corpus)
    (exp / "single").mkdir()
    single = pipeline.train(exp / "single", config, corpus, stats)
    return dict(corpus=corpus, config=config, exp=exp, stats=stats, single=single, bert=bert)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=["one_node", "two_nodes"])
def runs(request, setup):
    """One epoch of the same training under DDP on two CPU ranks: one node of
    two workers (``--standalone``), or two nodes of one worker each on this
    machine, as a multi-node job starts them (``--nnodes 2 --node_rank k``,
    rendezvous on 127.0.0.1)."""
    launch = request.param
    exp = setup["exp"] / launch
    ddp_out = exp / "model"
    probe_dir = exp / "probe"
    probe_dir.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               GMOT_DDP_PROBE_DIR=str(probe_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    training = ["-m", "tests.helpers.ddp_probe",
                *pipeline.train_args(ddp_out, setup["config"], setup["corpus"], setup["stats"]),
                "--dist_backend", "gloo", "--multiprocessing_distributed", "false"]
    run = [sys.executable, "-m", "torch.distributed.run"]
    if launch == "one_node":
        commands = [[*run, "--standalone", "--nproc_per_node", str(WORLD_SIZE), *training]]
    else:
        port = str(free_port())
        commands = [[*run, "--nnodes", str(WORLD_SIZE), "--node_rank", str(node),
                     "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
                     "--master_port", port, *training] for node in range(WORLD_SIZE)]
    logs = [exp / f"train.{k}.log" for k in range(len(commands))]
    procs = []
    for command, log in zip(commands, logs):
        with open(log, "w") as out:
            procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
    try:
        codes = [proc.wait(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    text = "\n".join(log.read_text() for log in logs)
    assert codes == [0] * len(procs), f"DDP training ({launch}) failed {codes}; logs {logs}:\n{text[-6000:]}"
    probes = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    return dict(single=setup["single"], ddp=ddp_out, log=text, probes=probes)


def test_every_worker_trains_the_gmot_model_under_ddp(runs):
    for rank, probe in enumerate(runs["probes"]):
        assert (probe["rank"], probe["world_size"]) == (rank, WORLD_SIZE)
        assert [d["module"] for d in probe["ddp"]] == ["ESPnetGMOTModel"], probe["ddp"]
        # ESPnet's default (unused_parameters: false): an unused parameter would
        # stop training at the second step, so the run finishing shows there is none.
        assert probe["ddp"][0]["find_unused_parameters"] is False
    assert "unused parameters" not in runs["log"] and "Expected to have finished reduction" not in runs["log"]
    assert (runs["ddp"] / "1epoch.pth").is_file()


def test_frozen_plm_is_loaded_once_per_worker_and_not_wrapped(runs):
    for probe in runs["probes"]:
        loads = probe["plm_loads"]
        assert len(loads) == 1, loads
        assert loads[0]["parameters"] > 0
        assert loads[0]["requires_grad"] is False
        assert loads[0]["in_ddp"] is False
        names = probe["ddp"][0]["parameters"]
        assert names and not any(n.startswith("teacher") for n in names)
        assert any(n.startswith("transfer.") for n in names)  # the trained transfer module is synced


def test_reported_stats_are_averaged_across_workers(runs):
    rank0, rank1 = (p["averages"] for p in runs["probes"])
    assert len(rank0) == len(rank1) > 0
    assert all(a["distributed"] for a in rank0 + rank1)
    keys = {"loss", "loss_ctc", "loss_align", "loss_fgw", "ot_entropy", "ot_marginal_error"}
    differed = False
    for a, b in zip(rank0, rank1):
        assert set(a["local"]) == set(b["local"]) == set(a["out"]) == set(b["out"])
        assert keys <= set(a["out"]), sorted(a["out"])
        total = a["weight"] + b["weight"]
        assert a["out_weight"] == pytest.approx(total) and b["out_weight"] == pytest.approx(total)
        for key in a["out"]:
            expected = (a["local"][key] * a["weight"] + b["local"][key] * b["weight"]) / total
            assert a["out"][key] == pytest.approx(expected, rel=1e-5, abs=1e-6), key
            assert b["out"][key] == pytest.approx(expected, rel=1e-5, abs=1e-6), key
        differed |= a["local"]["loss"] != b["local"]["loss"]
    assert differed, "both workers saw the same batches: nothing was averaged"


def test_checkpoint_keys_match_a_single_process_run(runs):
    single = torch.load(runs["single"] / "1epoch.pth", map_location="cpu")
    ddp = torch.load(runs["ddp"] / "1epoch.pth", map_location="cpu")
    assert sorted(ddp) == sorted(single)
    assert not any(k.startswith("module.") for k in ddp)
    for key, value in single.items():
        assert ddp[key].shape == value.shape, key


# --- a killed worker ------------------------------------------------------------

KILLED_EPOCHS = 3


def start_ddp(setup, config, out, probe_dir, log, *torchrun_options, env=None):
    """asr.sh's training command (with its --resume true) on one node of two workers."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               GMOT_DDP_PROBE_DIR=str(probe_dir), **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(WORLD_SIZE), *torchrun_options,
               "-m", "tests.helpers.ddp_probe",
               *pipeline.train_args(out, config, setup["corpus"], setup["stats"],
                                    extra_args=["--resume", "true"]),
               "--dist_backend", "gloo", "--multiprocessing_distributed", "false"]
    with open(log, "w") as stream:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT)


def kill_rank_1_in_epoch_2(out, probe_dir, proc):
    """SIGKILL rank 1 just after epoch 1's checkpoint; returns the kill's time."""
    deadline = time.monotonic() + 600
    while not (out / "1epoch.pth").exists():
        assert proc.poll() is None, "the training ended before its first epoch"
        assert time.monotonic() < deadline, "no first epoch within 10 minutes"
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    assert proc.poll() is None and not (out / "2epoch.pth").exists(), "epoch 2 ended too soon"
    os.kill(int((probe_dir / "rank1.pid").read_text()), signal.SIGKILL)
    return time.monotonic()


def model_files(out):
    """The epochs ESPnet kept (keep_nbest_models), its best and averaged models."""
    return sorted(p.name for p in out.glob("*.pth"))


def last_epoch(out):
    return torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]["epoch"]


def assert_ends_as_uninterrupted(out, reference):
    """All epochs run, the same kept and averaged models, the same model keys."""
    assert last_epoch(out) == last_epoch(reference) == KILLED_EPOCHS
    assert model_files(out) == model_files(reference)
    final = torch.load(out / f"{KILLED_EPOCHS}epoch.pth", map_location="cpu")
    assert sorted(final) == sorted(torch.load(reference / f"{KILLED_EPOCHS}epoch.pth", map_location="cpu"))


@pytest.fixture(scope="module")
def uninterrupted(setup):
    config = setup["exp"] / "killed_epochs.yaml"
    config.write_text(tiny_gmot_config_text(setup["bert"], max_epoch=KILLED_EPOCHS))
    (setup["exp"] / "uninterrupted").mkdir()
    out = pipeline.train(setup["exp"] / "uninterrupted", config, setup["corpus"], setup["stats"])
    return config, out


def test_a_killed_worker_stops_the_job_and_the_same_command_resumes(setup, uninterrupted):
    config, reference = uninterrupted
    exp = setup["exp"] / "killed"
    out, probe_dir = exp / "model", exp / "probe"
    exp.mkdir()
    proc = start_ddp(setup, config, out, probe_dir, exp / "train.log")
    killed_at = kill_rank_1_in_epoch_2(out, probe_dir, proc)
    code = proc.wait(timeout=300)
    detected = time.monotonic() - killed_at
    log = (exp / "train.log").read_text()
    assert code != 0, log[-3000:]
    assert "Signal 9 (SIGKILL)" in log and "rank      : 1" in log, log[-3000:]  # torchrun's summary
    assert last_epoch(out) == 1  # epoch 1's checkpoint loads whole; epoch 2 was cut

    started = time.monotonic()
    rerun = start_ddp(setup, config, out, probe_dir, exp / "rerun.log")
    assert rerun.wait(timeout=900) == 0, (exp / "rerun.log").read_text()[-3000:]
    recovered = time.monotonic() - started
    assert_ends_as_uninterrupted(out, reference)
    print(f"killed worker: detected in {detected:.1f} s, rerun to the end in {recovered:.1f} s")


def test_torchrun_restarts_a_killed_worker_and_the_job_finishes(setup, uninterrupted):
    config, reference = uninterrupted
    exp = setup["exp"] / "restarted"
    out, probe_dir = exp / "model", exp / "probe"
    exp.mkdir()
    # torch 2.11's restarts reuse the rendezvous store and can hand a restarted
    # worker the dead one's gloo address (pytorch/pytorch#135712): README, "Several GPUs or nodes"
    proc = start_ddp(setup, config, out, probe_dir, exp / "train.log", "--max_restarts", "1",
                     env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    killed_at = kill_rank_1_in_epoch_2(out, probe_dir, proc)
    killed_pid = (probe_dir / "rank1.pid").read_text()
    while (probe_dir / "rank1.pid").read_text() == killed_pid and proc.poll() is None:
        time.sleep(0.05)
    restarted = time.monotonic() - killed_at
    assert proc.wait(timeout=900) == 0, (exp / "train.log").read_text()[-3000:]
    finished = time.monotonic() - killed_at
    assert_ends_as_uninterrupted(out, reference)
    print(f"killed worker with --max_restarts 1: workers restarted {restarted:.1f} s after the kill, "
          f"job finished {finished:.1f} s after it")
