"""Hardware switches through Trainer flags only: precision, accelerator, devices, nodes; GPU tests skip without CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from example_helpers import (
    DEFAULT_CONFIG,
    SMALL_STREAM,
    assert_near_training_optimum,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
    with_experiment,
)

from linreg_pl.cli import main

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TRUE_W = torch.tensor([2.0, -3.4])


def max_error(cli) -> float:
    weight, bias = cli.model.learned_parameters()
    return max((weight - TRUE_W).abs().max().item(), abs(bias.item() - 4.2))


def test_bf16_mixed_precision_on_cpu(isolated):
    # the flag takes effect: bf16 matmuls round differently, so one step from the same start differs from float32's
    steps = [
        run_cli("fit", "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false", *precision).model
        for precision in ([], ["--trainer.precision", "bf16-mixed"])
    ]
    assert not torch.equal(steps[0].linear.weight, steps[1].linear.weight)
    cli = run_cli("fit", "--config", DEFAULT_CONFIG, "--trainer.precision", "bf16-mixed")
    assert cli.model.linear.weight.dtype == torch.float32  # weights stay float32; bf16 only for the matmuls
    assert_near_training_optimum(cli, 1e-2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_without_one_is_one_line(capsys, isolated):
    with pytest.raises(SystemExit) as exit_info:
        main(with_experiment(["fit", "--trainer.accelerator", "gpu"]))
    assert exit_info.value.code == 2
    # Lightning's own reason, named as the Trainer's
    assert (
        capsys.readouterr().err.strip().splitlines()[-1] == "linreg-pl: error: trainer: No supported gpu backend found!"
    )


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_fit_on_one_gpu_keeps_the_data_on_it(precision, isolated):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cli = run_cli(
        "fit",
        "--config",
        DEFAULT_CONFIG,
        "--config",
        str(ROOT / "configs" / "gpu.yaml"),
        "--trainer.precision",
        precision,
        quiet=False,
    )
    assert cli.datamodule.splits["train"][0].device.type == "cuda"  # moved once, not per batch
    assert_near_training_optimum(cli, 1e-3 if precision == "32-true" else 1e-2)


@pytest.mark.gpu
@needs_cuda
def test_streaming_on_one_gpu(isolated):
    cli = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs" / "gpu.yaml"),
        *SMALL_STREAM,
        quiet=False,
    )
    assert max_error(cli) < 0.01


@pytest.mark.gpu
@needs_cuda
def test_gpu_checkpoint_tests_on_cpu(isolated):
    run_cli("fit", "--config", DEFAULT_CONFIG, "--config", str(ROOT / "configs" / "gpu.yaml"), quiet=False)
    ckpt = str(isolated / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    tested = run_cli("test", "--ckpt_path", ckpt)
    assert tested.trainer.callback_metrics["test/r2"].item() > 0.999
