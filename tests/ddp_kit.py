"""For test_template.py: each experiment's fit, then predict from its checkpoint, under DDP in one launch.

    KIT_PORTS=<free ports> torchrun --standalone --nproc_per_node 2 tests/ddp_kit.py kit.json

kit.json lists the experiments: `[{"config": ..., "args": [...], "predict": bool, "default_path": bool}]`. Both
processes run every command in turn (torchrun started them, so Lightning uses them as they are); each experiment's
runs land under <config stem>/ and its predictions in <config stem>.csv. When all of that is done, rank 0 writes
`explicit.done`; then the experiments marked `default_path` predict again without `--predictions.path`, into their
predict run's log directory (<stem>/lightning_logs/version_2/predictions.csv). The test kills the launch if that
last part hangs. One launch instead of several per experiment: the imports and the process start are paid once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from linreg_pl.cli import main

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false"]
PORTS = iter(os.environ.get("KIT_PORTS", "").split(","))


def new_group() -> None:
    """Each command opens its own process group: a fresh store on a port of its own, from KIT_PORTS (free ports
    the test picked), as torchrun's own store still holds the previous group's addresses."""
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"
    os.environ["MASTER_PORT"] = next(PORTS)


def command(subcommand: str, experiment: dict, *args: str) -> None:
    new_group()
    root = ["--trainer.default_root_dir", Path(experiment["config"]).stem]
    main([subcommand, "--config", experiment["config"], *DDP, *experiment["args"], *root, *args, *QUIET])


if __name__ == "__main__":
    experiments = json.loads(Path(sys.argv[1]).read_text())
    for experiment in experiments:
        stem = Path(experiment["config"]).stem
        command("fit", experiment, "--trainer.max_epochs", "1")
        if experiment["predict"]:
            ckpt = f"{stem}/lightning_logs/version_0/checkpoints/last.ckpt"
            command("predict", experiment, "--ckpt_path", ckpt, "--predictions.path", f"{stem}.csv")
    if os.environ.get("RANK", "0") == "0":
        Path("explicit.done").touch()
    for experiment in experiments:
        if experiment["default_path"]:
            ckpt = f"{Path(experiment['config']).stem}/lightning_logs/version_0/checkpoints/last.ckpt"
            command("predict", experiment, "--ckpt_path", ckpt)
