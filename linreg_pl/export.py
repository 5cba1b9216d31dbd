"""Export a trained module to a file that runs without this package: ONNX or a torch.export program.

    python -m linreg_pl export --ckpt_path CKPT --output model.onnx

Any `nn.Module` whose `forward` `torch.export` can trace: the file's inputs are named after `forward`'s
parameters, its outputs `predictions` (one tensor) or `predictions_0`, ... (a tuple) or the dict's keys, with
the shapes `forward` returns, and the first (batch) dimension of every input free. The suffix of the output
chooses the format: `.onnx` for ONNX Runtime and other ONNX consumers, `.pt2` for
`torch.export.load(path).module()`. A module that carries its own preprocessing as buffers (the regression
example's standardisation) carries it into the file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import inspect
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn

from linreg_pl.checkpoints import load_datamodule, load_module
from linreg_pl.errors import ConfigError

PROG = "linreg-pl"

FORMATS = {".onnx": "ONNX", ".pt2": "torch.export"}
# the lowest opset the exporter writes without converting (lower ones print a conversion warning);
# pinned so the file does not change with the torch version: ONNX Runtime reads it from 1.16 on (IR 10)
ONNX_OPSET = 18
# what `torch.onnx.export(..., dynamo=True)` imports; onnxruntime, also in the extra, only runs the file
ONNX_EXPORT_NEEDS = ("onnx", "onnxscript")
# torch's loggers that print, on every export or failed trace, what no user can act on (`_quiet_torch_export`)
QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration", "torch.fx.experimental.symbolic_shapes")


@dataclass
class Exported:
    """What `export_model` wrote: the file, and each input's and output's name, dtype and shape after the
    (free) batch dimension."""

    path: Path
    inputs: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    outputs: dict[str, tuple[torch.dtype, tuple[int, ...]]]


def input_names(model: nn.Module) -> list[str]:
    """The names of `model.forward`'s positional parameters without a default: the exported file's inputs
    (parameters with defaults keep them in the file)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(model.forward).parameters.values()
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


def export_model(model: nn.Module, example: Tensor | Sequence[Tensor], output: str | Path) -> Exported:
    """Write `model` to `output` in the format its suffix names.

    Args:
        model: any module `torch.export` can trace; left as it is (a copy, in eval mode on the CPU, is exported).
        example: an input batch for `forward` (a tensor, or one tensor per parameter), any batch size: its
            values are not kept, only its dtypes and shapes beyond the batch dimension.
        output: a `.onnx` or `.pt2` path; missing parent folders are created.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        accepted = ", ".join(f"{s} ({name})" for s, name in FORMATS.items())
        raise ConfigError(f"cannot export to {output}: unknown suffix {suffix!r}; use {accepted}")
    if suffix == ".onnx" and not all(importlib.util.find_spec(name) for name in ONNX_EXPORT_NEEDS):
        raise ConfigError('ONNX export needs the `export` extra: pip install -e ".[export]"')

    # a copy: eval mode and the move to the CPU must not change the caller's model (a LightningModule
    # drops its trainer when copied)
    model = copy.deepcopy(model).cpu().eval()
    names = input_names(model)
    example = (example,) if isinstance(example, Tensor) else tuple(example)
    if not all(isinstance(t, Tensor) for t in example):
        raise ConfigError(
            f"cannot export {type(model).__name__}: the example input must be a tensor or a tuple of tensors, one "
            f"per input of forward ({', '.join(names)}); give --input_shape"
        )
    if len(example) != len(names):
        raise ConfigError(
            f"cannot export {type(model).__name__}: forward takes {len(names)} inputs ({', '.join(names)}), "
            f"the example has {len(example)}"
        )
    # a batch of 2: torch.export treats a size-1 dimension as the constant 1 and would then refuse to mark it
    # dynamic; the values do not matter, only dtypes and shapes
    example = tuple(torch.zeros((2, *t.shape[1:]), dtype=t.dtype) for t in example)
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {name: {0: batch} for name in names}
    try:
        with torch.no_grad():
            results = model(*example)
        # a failed trace also prints its partial graph to stderr (torch.export's own `print`): the reason is
        # reported below in one line, so the dump goes nowhere
        with _quiet_torch_export(), contextlib.redirect_stderr(io.StringIO()):
            program = torch.export.export(model, example, dynamic_shapes=dynamic_shapes)
    except Exception as error:  # torch's reason, first line: the rest is its guide to rewriting the model
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ConfigError(f"torch.export cannot export {type(model).__name__}: {reason}") from None
    outputs = _outputs(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pt2":
        torch.export.save(program, output)
    else:
        with _quiet_torch_export():
            torch.onnx.export(
                model,
                example,
                output,
                # the torch.export-based exporter: the legacy TorchScript one (dynamo=False) is deprecated and says
                # so with a DeprecationWarning on every call. Given the module, not the program traced above, so
                # that the batch dimension keeps its name in the file ("batch", not torch's "s97")
                dynamo=True,
                input_names=names,
                output_names=list(outputs),
                dynamic_shapes=dynamic_shapes,
                opset_version=ONNX_OPSET,
                # one self-contained file; otherwise an (empty, for weights this small) `.onnx.data` beside it
                external_data=False,
                # verbose=None prints a progress line per export step
                verbose=False,
            )
    inputs = {name: (t.dtype, tuple(t.shape[1:])) for name, t in zip(names, example, strict=True)}
    return Exported(output, inputs, outputs)


def _outputs(results: Any) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Each output's name, dtype and shape after the batch dimension, in the order the file returns them."""
    if isinstance(results, Tensor):
        named = {"predictions": results}
    elif isinstance(results, Mapping):
        named = {str(key): value for key, value in results.items()}
    else:
        named = {f"predictions_{i}": value for i, value in enumerate(results)}
    return {name: (value.dtype, tuple(value.shape[1:])) for name, value in named.items()}


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """Silence what torch 2.13's exporters print that no user can act on.

    All of it comes from inside torch, not from the model or our arguments, so nothing we pass avoids it:
    - the ONNX op registry logs "torchvision is not installed. Skipping torchvision::nms" (and three more)
      as warnings; the model's ops are what they are;
    - `ExportedProgram.run_decompositions` deep-copies its module call graph, which constructs a
      pytree `LeafSpec` and so raises torch's own FutureWarning "`isinstance(treespec, LeafSpec)`
      is deprecated";
    - a trace that fails logs the partial graph as a warning ("Unable to find user code ..."); the failure
      itself is raised, and reported in one line.
    Only these are filtered, and only during the export; everything else still shows.
    """
    logs = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
            )
            yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


def main(args: list[str]) -> Path:
    """`export --ckpt_path CKPT --output FILE`: the checkpoint's module as ONNX or a torch.export program."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} export",
        description="Write a trained module to a file that runs without this package: the inputs of its forward "
        "(named after its parameters, batch dimension free) and what forward returns; preprocessing the module "
        "holds as buffers (the regression example's standardisation) is inside the file.",
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit (any LightningModule)")
    parser.add_argument(
        "--output",
        required=True,
        help=f"the file to write; its suffix picks the format: {', '.join(f'{s} ({n})' for s, n in FORMATS.items())}",
    )
    parser.add_argument(
        "--input_shape",
        default=None,
        help="one example's shape without the batch dimension, float32, e.g. 2 or 3,32,32; default: the module's "
        "example_input_array, else a predict (or validation) batch of the data module the checkpoint names",
    )
    options = parser.parse_args(args)
    model = load_module(options.ckpt_path)
    exported = export_model(model, _example_input(model, options.ckpt_path, options.input_shape), options.output)
    path = exported.path
    print(f"wrote {path} ({FORMATS[path.suffix.lower()]}, {path.stat().st_size:,} bytes)", flush=True)
    columns = model.hparams.get("feature_names")
    for kind, named in (("input", exported.inputs), ("output", exported.outputs)):
        for name, (dtype, shape) in named.items():
            line = f'{kind} "{name}": {str(dtype).removeprefix("torch.")} [{", ".join(["batch", *map(str, shape)])}]'
            if kind == "input" and columns and shape == (len(columns),):
                line += f", columns in this order: {', '.join(columns)}"
            print(line, flush=True)
    return path


def _example_input(model: LightningModule, path: str, input_shape: str | None) -> Any:
    """An input batch for `model.forward`: of `input_shape`, else the module's `example_input_array` (Lightning's
    own attribute for this), else the first predict (or validation) batch of the data module the checkpoint names
    (`datamodule_hyper_parameters`, saved when the data module calls `save_hyperparameters()`)."""
    if input_shape is not None:
        try:
            shape = tuple(int(size) for size in input_shape.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ConfigError(
                f"--input_shape must be sizes >= 1 separated by commas, e.g. 2 or 3,32,32; got {input_shape!r}"
            )
        return torch.zeros(2, *shape)
    if model.example_input_array is not None:
        return model.example_input_array
    datamodule = load_datamodule(path)
    if datamodule is None:
        raise ConfigError(
            f"cannot tell what {type(model).__name__}.forward takes: give --input_shape (one example's shape), set "
            "the module's example_input_array, or have its data module call save_hyperparameters() so that "
            "export can build it from the checkpoint"
        )
    batch = _first_batch(datamodule)
    count = len(input_names(model))
    if isinstance(batch, Mapping):
        return tuple(batch[name] for name in input_names(model))
    return tuple(batch[:count]) if isinstance(batch, (tuple, list)) else batch


def _first_batch(datamodule: LightningDataModule) -> Any:
    datamodule.prepare_data()
    for stage, loader in (("predict", "predict_dataloader"), ("validate", "val_dataloader")):
        datamodule.setup(stage)
        try:
            return next(iter(getattr(datamodule, loader)()))
        except (MisconfigurationException, NotImplementedError, StopIteration):
            continue  # Lightning's "`predict_dataloader` must be implemented", or an empty split
    raise ConfigError(f"{type(datamodule).__name__} has no predict or validation batch to take an example input from")
