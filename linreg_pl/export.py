"""Export a trained module to a file that runs without this package: ONNX (`.onnx`) or a torch.export program (`.pt2`).

    python -m linreg_pl export --ckpt_path CKPT --output model.onnx

Any module whose `forward` `torch.export` can trace: inputs named after `forward`'s parameters, batch dimension free;
outputs `predictions`, `predictions_0`, ... (a tuple) or a dict's keys; buffers (preprocessing) inside the file. Every
failure is a `ConfigError`: what we check in one line, what torch or a user's class raised with its reason as raised.
"""

import argparse
import contextlib
import copy
import importlib.util
import inspect
import io
import logging
import pydoc
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn

from linreg_pl.checkpoint_io import read_checkpoint
from linreg_pl.errors import ConfigError

FORMATS = {".onnx": "ONNX", ".pt2": "torch.export"}
# the lowest opset written without a conversion warning, pinned so the file does not change with torch (ORT >= 1.16)
ONNX_OPSET = 18
ONNX_EXPORT_NEEDS = ("onnx", "onnxscript")  # what the exporter imports; onnxruntime (in the extra) only runs files
# torch's loggers that print, on every export or failed trace, what no user can act on (`_quiet_torch_export`)
QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration", "torch.fx.experimental.symbolic_shapes")


class Exported(NamedTuple):
    """What `export_model` wrote: the file, each input's and output's name, dtype and shape after the batch."""

    path: Path
    inputs: dict[str, tuple[torch.dtype, tuple[int, ...]]]
    outputs: dict[str, tuple[torch.dtype, tuple[int, ...]]]


def input_names(model: nn.Module) -> list[str]:
    """`model.forward`'s positional parameters without a default: the file's inputs (defaults stay in the file)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(model.forward).parameters.values()
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


def export_model(
    model: nn.Module, example: Tensor | Sequence[Tensor] | Mapping[str, Tensor], output: str | Path
) -> Exported:
    """Write a copy of `model` (eval mode, CPU) to `output` in the format its suffix names. `example`: a batch for
    `forward` (a tensor, one per parameter, or a dict of them by name); only its dtypes and shapes are kept."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        accepted = ", ".join(f"{s} ({name})" for s, name in FORMATS.items())
        raise ConfigError(f"cannot export to {output}: unknown suffix {suffix!r}; use {accepted}")
    if suffix == ".onnx" and not all(importlib.util.find_spec(name) for name in ONNX_EXPORT_NEEDS):
        raise ConfigError('ONNX export needs the `export` extra: pip install -e ".[export]"')

    model = copy.deepcopy(model).cpu().eval()  # the caller's model stays as it is
    names = input_names(model)
    example = forward_inputs(model, example, "the example input", exact=True)
    if len(example) != len(names) or not all(isinstance(t, Tensor) for t in example):
        many = f"set example_input_array to {len(names)} tensors (a tuple, or a dict by name)"
        kinds = ", ".join(type(value).__name__ for value in example)
        raise ConfigError(
            f"cannot export {type(model).__name__}: forward takes {len(names)} inputs ({', '.join(names)}), the "
            f"example is ({kinds}); {'give --input_shape' if len(names) == 1 else many}"
        )
    # a batch of 2: torch.export takes a size-1 dimension for the constant 1, and would not make it dynamic
    example = tuple(torch.zeros((2, *t.shape[1:]), dtype=t.dtype) for t in example)
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {name: {0: batch} for name in names}
    # a failed trace also prints its partial graph to stderr: the reason is reported in the error
    with _reported("torch.export", model), _quiet_torch_export(), contextlib.redirect_stderr(io.StringIO()):
        with torch.no_grad():
            results = model(*example)
        program = torch.export.export(model, example, dynamic_shapes=dynamic_shapes)
    outputs = _outputs(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pt2":
        torch.export.save(program, output)
    else:
        with _quiet_torch_export(), _reported("the ONNX exporter", model):
            # dynamo=True: the legacy exporter is deprecated (a warning a call); the module, not the program traced
            # above, so the batch dimension keeps its name; one self-contained file; no progress line per step
            torch.onnx.export(model, example, output, dynamo=True, input_names=names, output_names=list(outputs),
                              dynamic_shapes=dynamic_shapes, opset_version=ONNX_OPSET, external_data=False,
                              verbose=False)  # fmt: skip
    inputs = {name: (t.dtype, tuple(t.shape[1:])) for name, t in zip(names, example, strict=True)}
    return Exported(output, inputs, outputs)


def forward_inputs(model: nn.Module, batch: Any, source: str, exact: bool = False) -> tuple[Any, ...]:
    """`batch` as `model.forward`'s inputs: a dict's values by parameter name, a tuple's first items in order (with
    `exact`, all: an example holds nothing else), a tensor as the one input. `source`: where it came from."""
    names = input_names(model)
    if isinstance(batch, Mapping):
        if any(name not in batch for name in names):
            raise ConfigError(
                f"cannot export {type(model).__name__}: forward takes ({', '.join(names)}), {source} is a dict of "
                f"({', '.join(map(str, batch))}); name its keys after forward's parameters"
                + ("" if exact else ", or set the module's example_input_array")
            )
        return tuple(batch[name] for name in names)
    if isinstance(batch, (tuple, list)):
        return tuple(batch) if exact else tuple(batch[: len(names)])
    return (batch,)


@contextmanager
def _reported(what: str, model: nn.Module) -> Iterator[None]:
    """Any exception inside as a `ConfigError` that names what failed, with torch's reason as raised."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"{what} cannot export {type(model).__name__}: {type(error).__name__}: {error}") from None


def _outputs(results: Any) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Each output's name, dtype and shape after the batch dimension, in the order the file returns them."""
    if isinstance(results, Tensor):
        results = {"predictions": results}
    elif not isinstance(results, Mapping):
        results = {f"predictions_{i}": value for i, value in enumerate(results)}
    return {str(name): (value.dtype, tuple(value.shape[1:])) for name, value in results.items()}


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """Silence, during the export only, what torch 2.13's exporters print that no user can act on: `QUIET_LOGGERS`, the
    `LeafSpec` FutureWarning from inside torch's `run_decompositions`, the ONNX note that inputs share a batch axis."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        for name in levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name: batch will not be used", category=UserWarning)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def main(args: list[str]) -> Path:
    """`export --ckpt_path CKPT --output FILE`: the checkpoint's module as ONNX or a torch.export program."""
    parser = argparse.ArgumentParser(prog="linreg-pl export", description="Write a trained module to a file.")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit (any LightningModule)")
    parser.add_argument("--output", required=True, help="the file to write: .onnx (ONNX) or .pt2 (torch.export)")
    parser.add_argument("--input_shape", help="one example's shape without the batch, float32, e.g. 3,32,32")
    options = parser.parse_args(args)
    model = _module(options.ckpt_path)
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
    """An input batch for `model.forward`, which fixes dtypes and shapes: `--input_shape`, else the module's
    `example_input_array`, else the first predict (or validation) batch of the data module in the run's config.yaml."""
    if input_shape is not None:
        sizes = input_shape.split(",")
        if not all(size.strip().isdecimal() and int(size) >= 1 for size in sizes):
            raise ConfigError(
                f"--input_shape must be sizes >= 1 separated by commas, e.g. 2 or 3,32,32; got {input_shape!r}"
            )
        return torch.zeros(2, *map(int, sizes))
    if model.example_input_array is not None:
        return forward_inputs(model, model.example_input_array, "its example_input_array", exact=True)
    datamodule = _from_run_config(path, "data", LightningDataModule)
    if datamodule is None:
        raise ConfigError(
            f"cannot tell what {type(model).__name__}.forward takes: give --input_shape (one example's shape), set "
            "the module's example_input_array, or keep the run's config.yaml beside its checkpoints/ folder so that "
            "export can build the data module"
        )
    stage, batch = _first_batch(datamodule)
    return forward_inputs(model, batch, f"the first {stage} batch of {type(datamodule).__name__}")


def _module(path: str) -> LightningModule:
    """The checkpoint's module on the CPU: the class its hyperparameters name (LightningCLI's `_class_path`, with
    `save_hyperparameters()`), rebuilt by `load_from_checkpoint`, else the one the run's config.yaml names."""
    checkpoint = read_checkpoint(path) or {}
    if (class_path := (checkpoint.get("hyper_parameters") or {}).get("_class_path")) is None:
        if (model := _from_run_config(path, "model", LightningModule)) is None:
            raise ConfigError(f"checkpoint {path!r} does not name its class, and no config.yaml of its run does")
        model.on_load_checkpoint(checkpoint)  # what load_from_checkpoint does with a checkpoint
        model.load_state_dict(checkpoint["state_dict"], strict=model.strict_loading)
        return model
    cls = pydoc.locate(str(class_path))
    if not (isinstance(cls, type) and issubclass(cls, LightningModule)):
        raise ConfigError(f"checkpoint {path!r} names {class_path}, which is not a LightningModule importable here")
    try:
        return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's "size mismatch for linear.weight ...", an init argument refused: as raised
        raise ConfigError(
            f"checkpoint {path!r} does not rebuild {cls.__name__}: {type(error).__name__}: {error}"
        ) from None


def _from_run_config(path: str, key: str, base: type) -> Any:
    """The model or data module (`key`) that `<run>/config.yaml` names (LightningCLI's copy, for a checkpoint in
    `<run>/checkpoints/`), built by jsonargparse as LightningCLI built it; None without that file or section."""
    config_path = Path(path).parent.parent / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        saved = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {config_path}: {type(error).__name__}") from None
    if not (section := saved.get(key) if isinstance(saved, dict) else None):
        return None
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, key, required=True)
    what = "data module" if key == "data" else "module"
    try:
        return parser.instantiate(parser.parse_object({key: section}))[key]
    except Exception as error:  # jsonargparse's reason, or what the class's own __init__ raised, as raised
        cause = error.__cause__ or error
        raise ConfigError(f"cannot build the {what} of {config_path}: {type(cause).__name__}: {cause}") from None


def _first_batch(datamodule: LightningDataModule) -> tuple[str, Any]:
    """The stage ("predict" or "validation") and the first batch of the data module's loader for it."""
    name = type(datamodule).__name__
    try:
        datamodule.prepare_data()
        stages = (("predict", "predict", "predict_dataloader"), ("validation", "validate", "val_dataloader"))
        for stage, setup, loader in stages:
            datamodule.setup(setup)
            try:
                return stage, next(iter(getattr(datamodule, loader)()))
            except (MisconfigurationException, NotImplementedError, StopIteration):
                continue  # Lightning's "`predict_dataloader` must be implemented", or an empty split
    except ConfigError:
        raise
    except Exception as error:  # the user's data module failed: its own words, as raised
        raise ConfigError(f"{name} gives no example input: {type(error).__name__}: {error}") from None
    raise ConfigError(f"{name} has no predict or validation batch to take an example input from")
