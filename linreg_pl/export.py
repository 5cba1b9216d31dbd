"""Export a trained model to a file that predicts without this package: ONNX or a torch.export program.

    python -m linreg_pl export --ckpt_path CKPT --output model.onnx

The suffix of the output chooses the format: `.onnx` for ONNX Runtime and other ONNX consumers,
`.pt2` for `torch.export.load(path).module()`. Either file takes raw features float32
[batch, num_inputs] named "features" and returns "predictions" [batch] in the targets' original units:
the model carries its own standardisation as buffers, so the file does too. The batch size is free.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from linreg_pl.errors import ConfigError

FORMATS = {".onnx": "ONNX", ".pt2": "torch.export"}
# the lowest opset the exporter writes without converting (lower ones print a conversion warning);
# pinned so the file does not change with the torch version: ONNX Runtime reads it from 1.16 on (IR 10)
ONNX_OPSET = 18
# what `torch.onnx.export(..., dynamo=True)` imports; onnxruntime, also in the extra, only runs the file
ONNX_EXPORT_NEEDS = ("onnx", "onnxscript")


def export_model(model: nn.Module, num_inputs: int, output: str | Path) -> Path:
    """Write `model` to `output` in the format its suffix names and return the path.

    Args:
        model: takes raw features float32 [n, num_inputs] and returns predictions [n]; left as it is
            (a copy, in eval mode on the CPU, is exported).
        num_inputs: number of features.
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
    # a batch of 2, not 1: torch.export treats a size-1 dimension as the constant 1 and would then
    # refuse to mark it dynamic
    example = torch.zeros(2, num_inputs)
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {"features": {0: batch}}
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pt2":
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
        torch.export.save(program, output)
    else:
        with _quiet_onnx_exporter():
            torch.onnx.export(
                model,
                (example,),
                output,
                # the torch.export-based exporter: the legacy TorchScript one (dynamo=False) is deprecated
                # and says so with a DeprecationWarning on every call
                dynamo=True,
                input_names=["features"],
                output_names=["predictions"],
                dynamic_shapes=dynamic_shapes,
                opset_version=ONNX_OPSET,
                # one self-contained file; otherwise an (empty, for weights this small) `.onnx.data` beside it
                external_data=False,
                # verbose=None prints a progress line per export step
                verbose=False,
            )
    return output


@contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Silence two messages torch 2.13's ONNX exporter prints on every export that no user can act on.

    Both come from inside torch, not from our model or arguments, so nothing we pass avoids them:
    - the op registry logs "torchvision is not installed. Skipping torchvision::nms" (and three more)
      as warnings; torchvision ops cannot occur in this model;
    - `ExportedProgram.run_decompositions` deep-copies its module call graph, which constructs a
      pytree `LeafSpec` and so raises torch's own FutureWarning "`isinstance(treespec, LeafSpec)`
      is deprecated".
    Only these are filtered, and only during the export; everything else still shows.
    """
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
            )
            yield
    finally:
        registry_log.setLevel(level)
