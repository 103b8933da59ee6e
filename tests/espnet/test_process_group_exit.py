"""A training worker destroys its process group before the interpreter exits
(:mod:`espnet_gmot.espnet.distributed`): ESPnet's trainer never does, and a
gloo worker then can abort at exit after training finished."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_registered_worker_exits_with_its_process_group_destroyed(tmp_path):
    script = textwrap.dedent(f"""
        import atexit
        import torch
        import torch.distributed as dist

        def report():  # registered first, so it runs after the plugin's handler
            print("initialized at exit:", dist.is_initialized(), flush=True)

        atexit.register(report)
        from espnet_gmot.espnet.registry import register
        register()
        dist.init_process_group(
            "gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1
        )
        values = torch.ones(3)
        dist.all_reduce(values)
        print("initialized:", dist.is_initialized(), flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == ["initialized: True", "initialized at exit: False"]
    assert "process group has NOT been destroyed" not in done.stderr
