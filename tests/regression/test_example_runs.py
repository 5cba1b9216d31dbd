"""The regression example through the core's run machinery: Ctrl-C on streamed data, and the README's two-node
torchrun command (bit-identical to one process).

    python -m pytest tests/regression/test_example_runs.py -m slow
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    DEFAULT_CONFIG,
    SMALL_STREAM,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)


def press_ctrl_c(at_step: int):
    """A stand-in for `DivergenceGuard.on_train_batch_end` that sends this process Ctrl-C at `at_step`."""

    def hook(self, trainer, *args):
        if trainer.global_step == at_step:
            signal.raise_signal(signal.SIGINT)

    return hook


def test_ctrl_c_on_streamed_data_says_the_resume_is_not_exact(isolated, monkeypatch, capsys):
    monkeypatch.setattr("linreg_pl.callbacks.DivergenceGuard.on_train_batch_end", press_ctrl_c(at_step=5))
    with pytest.raises(SystemExit):
        run_cli("fit", *SMALL_STREAM)
    named = "./lightning_logs/version_0/checkpoints/interrupted.ckpt"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Interrupted (Ctrl-C): saved {named}. This data keeps no place in the epoch, so a resumed epoch's "
        f"remaining steps start from its first batches. Resume with: fit <same config> --ckpt_path {named}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_train_as_one_process(isolated):
    """The README's torchrun command, both "nodes" on this machine, started together."""
    port = str(free_port())
    torchrun = Path(sys.executable).with_name("torchrun")
    configs = ROOT / "configs"
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    processes = [
        subprocess.Popen(
            [str(torchrun), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
             "--master_addr", "127.0.0.1", "--master_port", port,
             "-m", "linreg_pl", "fit", "--config", str(configs / "default.yaml"), "--config", str(configs / "ddp.yaml"),
             "--trainer.devices", "1", "--trainer.num_nodes", "2", "--trainer.accelerator", "cpu"],
            cwd=isolated, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "max |learned - true|" in outputs[0]
    assert [p.name for p in (isolated / "lightning_logs").iterdir()] == ["version_0"]  # one run, one directory
    ddp = torch.load(version_dir(isolated) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    single = run_cli("fit", "--config", DEFAULT_CONFIG)
    # 2 processes x batch 5, gradients averaged = one process x batch 10: the same steps
    assert torch.equal(ddp["linear.weight"], single.model.linear.weight)  # bit-identical, as the README says
    assert torch.equal(ddp["linear.bias"], single.model.linear.bias)
