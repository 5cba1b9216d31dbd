"""For test_template.py: each experiment's fit, then predict from its checkpoint, under DDP in one launch.

    KIT_PORTS=<2 free ports per config> torchrun --standalone --nproc_per_node 2 tests/ddp_kit.py CONFIG...

Both processes run every command in turn (torchrun started them, so Lightning uses them as they are); each
experiment's run lands under <config stem>/ and its predictions in <config stem>.csv. One launch instead of two
per experiment: the imports and the process start are paid once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from linreg_pl.cli import main

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
QUIET = ["--trainer.enable_model_summary", "false"]


def new_group(index: int) -> None:
    """Each command opens its own process group: a fresh store on a port of its own, from KIT_PORTS (free ports
    the test picked), as torchrun's own store still holds the previous group's addresses."""
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"
    os.environ["MASTER_PORT"] = os.environ["KIT_PORTS"].split(",")[index]


if __name__ == "__main__":
    for index, config in enumerate(sys.argv[1:]):
        stem = Path(config).stem
        new_group(2 * index)
        main(["fit", "--config", config, *DDP, "--trainer.max_epochs", "1", "--trainer.default_root_dir", stem, *QUIET])
        new_group(2 * index + 1)
        ckpt = f"{stem}/lightning_logs/version_0/checkpoints/last.ckpt"
        main(["predict", "--config", config, *DDP, "--ckpt_path", ckpt, "--predictions.path", f"{stem}.csv", *QUIET])
