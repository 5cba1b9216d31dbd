"""The package as users install it: a wheel (not an editable install) carries the base config, so its runs get
the same directory, last.ckpt and guards.

    python -m pytest -m slow tests/test_install.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def run(command: list[str], cwd: Path, **environment: str) -> str:
    done = subprocess.run(command, cwd=cwd, env=dict(os.environ, **environment), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_wheel_install_runs_as_the_checkout_does(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)], tmp_path)
    (wheel,) = wheels.glob("linreg_pl-*.whl")
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], tmp_path)
    fit = ["-m", "linreg_pl", "fit", "--model", "user_models.Classifier", "--data", "user_models.Blobs",
           "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu"]  # fmt: skip
    # the wheel's package first on the path (an editable install of this checkout may also be in the environment)
    where = run([sys.executable, "-c", "import linreg_pl.cli as c; print(c.BASE_CONFIG)"], tmp_path,
                PYTHONPATH=str(site))  # fmt: skip
    assert Path(where.strip()).is_file() and Path(where.strip()).is_relative_to(site)
    for name, path in (("wheel", site), ("checkout", ROOT)):
        (tmp_path / name).mkdir()
        run([sys.executable, *fit], tmp_path / name, PYTHONPATH=os.pathsep.join([str(path), str(ROOT / "tests")]))
    assert (
        tree(tmp_path / "wheel")
        == tree(tmp_path / "checkout")
        == {
            "lightning_logs/version_0/config.yaml",
            "lightning_logs/version_0/hparams.yaml",
            "lightning_logs/version_0/metrics.csv",
            "lightning_logs/version_0/checkpoints/last.ckpt",
        }
    )
    saved = (tmp_path / "wheel" / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "divergence_guard:" in saved and "AtomicCheckpointIO" in saved
