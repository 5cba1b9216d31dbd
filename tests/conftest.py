"""Every test runs on CPU, in its own temporary directory, with a quiet Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from linreg_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(ROOT / "configs" / "default.yaml")
EXPERIMENT_DATA = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())["data"]["init_args"]
# after the test's own arguments, so a config file cannot turn the GPU or the summary back on
# the default experiment, streamed: 20,000 examples in chunks of 2,000, one generating thread
SMALL_STREAM = [
    "--config",
    str(ROOT / "configs" / "stream.yaml"),
    "--data.num_examples",
    "20000",
    "--data.chunk_size",
    "2000",
]
QUIET = ["--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    # lightning_logs/ (logs, configs, checkpoints) lands in the test's own directory
    monkeypatch.chdir(tmp_path)
    # the CLI is driven through `main(args)`; pytest's own arguments are not for it
    monkeypatch.setattr("sys.argv", ["linreg-pl"])
    return tmp_path


def run_cli(subcommand: str, *args: str, quiet: bool = True):
    """Run the CLI in-process and return the LightningCLI object (model, datamodule, trainer)."""
    return main([subcommand, *args, *(QUIET if quiet else [])])


def version_dir(root: Path, version: int = 0) -> Path:
    return root / "lightning_logs" / f"version_{version}"
