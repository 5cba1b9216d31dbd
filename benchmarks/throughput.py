"""Training throughput, side by side in one process: a plain PyTorch loop, the classic Lightning port,
and this project's `fit`; plus streaming memory/speed and whole-process start-up.

    python benchmarks/throughput.py                       # everything, on CPU
    python benchmarks/throughput.py --sections loops      # only the in-process loop comparison
    python benchmarks/throughput.py --sections cuts       # linreg_pl/fast.py's cuts, one at a time
    python benchmarks/throughput.py --sections guard      # DivergenceGuard's memory on a 100M-parameter model
    python benchmarks/throughput.py --device cuda         # the same on a GPU

Sections:
  loops      (a) plain loop, randperm + `features[index]`; (b) TensorDataset + DataLoader + Trainer, logging the
             loss every step (the usual port); (c) this project's LinearRegression + data module +
             Trainer as the CLI builds them (CSV logger, checkpoints, callbacks). Each on the default
             experiment (1000 x 2, batch 10) and on 1M x 100, batch 4096. Training time only: from
             the start of an epoch to the end of its last training batch, median over epochs after
             the first; validation and checkpointing are outside the timed span. Then the default
             experiment's (c) against the DataLoader loop in --repeats interleaved pairs (median ratio).
  cuts       the default experiment's step with linreg_pl/fast.py's cuts added one at a time.
  streaming  50M x 100 generated on the fly (20 GB if materialised) in a child process; peak memory of
             the whole process tree, and samples/s against the in-memory path at 1M x 100.
  process    wall time of `python -m linreg_pl fit --config configs/default.yaml` against a plain
             seed-style script (data, DataLoader, nn.Linear, SGD, 3 epochs) run the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer:
    """Collects the training span of each epoch (a Lightning callback, built lazily)."""

    @staticmethod
    def make():
        from lightning.pytorch import Callback

        class _Timer(Callback):
            def __init__(self) -> None:
                self.spans: list[float] = []
                self.steps: list[int] = []

            def on_train_epoch_start(self, trainer, pl_module) -> None:
                self._sync(pl_module)
                self._start, self._step = time.perf_counter(), trainer.global_step

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                if trainer.is_last_batch:
                    self._sync(pl_module)
                    self.spans.append(time.perf_counter() - self._start)
                    self.steps.append(trainer.global_step - self._step)

            @staticmethod
            def _sync(pl_module) -> None:
                if pl_module.device.type == "cuda":
                    torch.cuda.synchronize()

        return _Timer()


def data(n: int, d: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=generator)
    targets = features @ torch.randn(d, generator=generator) + 4.2
    return features.to(device), targets.to(device)


def plain_loop(features, targets, batch_size: int, epochs: int) -> dict:
    model = nn.Linear(features.shape[1], 1).to(features.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
    n, spans = len(features), []
    for _ in range(epochs):
        _sync(features)
        start = time.perf_counter()
        order = torch.randperm(n, device=features.device)
        for first in range(0, n, batch_size):
            index = order[first : first + batch_size]
            loss = nn.functional.mse_loss(model(features[index]).squeeze(-1), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(features)
        spans.append(time.perf_counter() - start)
    steps = -(-n // batch_size)
    return summarise(spans, [n] * epochs, [steps] * epochs)


def plain_dataloader_loop(features, targets, batch_size: int, epochs: int) -> dict:
    """The plain loop most scripts write: DataLoader(TensorDataset(...), shuffle=True)."""
    from torch.utils.data import DataLoader, TensorDataset

    model = nn.Linear(features.shape[1], 1).to(features.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
    loader = DataLoader(TensorDataset(features, targets), batch_size=batch_size, shuffle=True)
    spans = []
    for _ in range(epochs):
        _sync(features)
        start = time.perf_counter()
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x).squeeze(-1), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(features)
        spans.append(time.perf_counter() - start)
    return summarise(spans, [len(features)] * epochs, [len(loader)] * epochs)


def classic_lightning(features, targets, batch_size: int, epochs: int, limit_batches=None) -> dict:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class ClassicPort(LightningModule):
        def __init__(self, num_inputs: int) -> None:
            super().__init__()
            self.net = nn.Linear(num_inputs, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.03)

    loader = DataLoader(TensorDataset(features.cpu(), targets.cpu()), batch_size=batch_size, shuffle=True)
    timer = EpochTimer.make()
    with tempfile.TemporaryDirectory() as logs:
        trainer = Trainer(
            max_epochs=epochs,
            accelerator=_accelerator(features),
            devices=1,
            logger=CSVLogger(logs),
            callbacks=[timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_train_batches=limit_batches,
            num_sanity_val_steps=0,
        )
        trainer.fit(ClassicPort(features.shape[1]), loader)
    samples = [steps * batch_size for steps in timer.steps]
    return summarise(timer.spans, samples, timer.steps)


def project_fit(n: int, d: int, batch_size: int, epochs: int, device: str, extra: Sequence[str] = ()) -> dict:
    """This project's fit exactly as `python -m linreg_pl fit --config configs/default.yaml` builds it
    (logger, checkpoints, guard, report, profiler, saved config), with a timer appended; `extra`
    arguments after the others."""
    from linreg_pl.cli import build_cli

    # 10% more examples for the validation split, so that n examples are trained on, as in (a) and (b)
    args = [
        "--config",
        str(ROOT / "configs" / "default.yaml"),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.accelerator",
        "gpu" if device == "cuda" else "cpu",
        "--trainer.devices",
        "1",
        "--data.init_args.num_inputs",
        str(d),
        "--data.init_args.true_w",
        "null",
        "--data.init_args.num_examples",
        str(round(n / 0.9)),
        "--data.init_args.val_fraction",
        "0.1",
        "--data.init_args.test_fraction",
        "0",
        "--data.init_args.batch_size",
        str(batch_size),
        *extra,
    ]
    timer = EpochTimer.make()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as logs:
        os.chdir(logs)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the report's lines, once per run
                cli = build_cli(args, run=False)
                cli.trainer.callbacks.append(timer)
                cli.trainer.fit(cli.model, cli.datamodule)
        finally:
            os.chdir(here)
    trained = len(cli.datamodule.splits["train"][0])
    return summarise(timer.spans, [trained] * len(timer.spans), timer.steps)


def summarise(spans: list[float], samples: list[int], steps: list[int]) -> dict:
    keep = slice(1, None) if len(spans) > 1 else slice(None)  # the first epoch warms up
    rates = [s / t for s, t in zip(samples[keep], spans[keep], strict=True)]
    step_times = [t / k for t, k in zip(spans[keep], steps[keep], strict=True)]
    return {"samples_per_s": statistics.median(rates), "step_us": statistics.median(step_times) * 1e6}


def _sync(tensor) -> None:
    if tensor.device.type == "cuda":
        torch.cuda.synchronize()


def _accelerator(tensor) -> str:
    return "gpu" if tensor.device.type == "cuda" else "cpu"


def loops_section(device: str, rounds: int) -> list[str]:
    lines = ["## Training loops (samples/s; per-step time; ratio to the plain loop)", ""]
    lines.append(
        "| case | (a) plain loop, randperm + indexing | (a') plain loop, DataLoader | (b) classic Lightning port "
        "| (c) this project's fit | c/a samples/s (step time) | c/a' step time | c/b samples/s |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    cases = [
        ("default: 1,000 x 2, batch 10", 800, 2, 10, 8, None),
        ("1M x 100, batch 4096", 1_000_000, 100, 4096, 4, 40),
    ]
    for name, n, d, batch, epochs, classic_limit in cases:
        features, targets = data(n, d, device)
        a = plain_loop(features, targets, batch, epochs)
        # per-sample indexing is slow: on the large case 200k examples are enough to measure its rate
        subset = slice(0, 200_000)
        a2 = plain_dataloader_loop(features[subset], targets[subset], batch, 3 if classic_limit else epochs)
        b = classic_lightning(features, targets, batch, min(epochs, 3), classic_limit)
        del features, targets
        c = project_fit(n, d, batch, epochs, device)
        c_over_a = f"{c['samples_per_s'] / a['samples_per_s']:.2f}x ({c['step_us'] / a['step_us']:.2f}x)"
        c_over_a2 = f"{c['step_us'] / a2['step_us']:.2f}x"
        c_over_b = f"{c['samples_per_s'] / b['samples_per_s']:.1f}x"
        lines.append(f"| {name} | {fmt(a)} | {fmt(a2)} | {fmt(b)} | {fmt(c)} | {c_over_a} | {c_over_a2} | {c_over_b} |")
        print(lines[-1], flush=True)
    lines += ["", paired_default_line(device, rounds), "", gather_line(device)]
    print(lines[-3], lines[-1], sep="\n", flush=True)
    return lines


def paired_default_line(device: str, rounds: int) -> str:
    """The default experiment's step against the DataLoader loop's, measured in `rounds` pairs, each fit right
    after its loop, so that the machine's drift (10-30% within minutes on a shared 2-core machine) hits both
    sides of a ratio alike; the table's single run of each is more exposed to it."""
    features, targets = data(800, 2, device)
    ratios, fits, loops = [], [], []
    for _ in range(rounds):
        loops.append(plain_dataloader_loop(features, targets, 10, 8)["step_us"])
        fits.append(project_fit(800, 2, 10, 8, device)["step_us"])
        ratios.append(fits[-1] / loops[-1])
    return (
        f"Default experiment, {rounds} pairs (DataLoader loop, then this project's fit): median step "
        f"{statistics.median(loops):.0f} us against {statistics.median(fits):.0f} us; median ratio of the pairs "
        f"{statistics.median(ratios):.2f}x (from {min(ratios):.2f}x to {max(ratios):.2f}x)."
    )


def gather_line(device: str) -> str:
    """One batch of 4096 random rows of a 1M x 100 tensor, as the plain loop takes it (advanced
    indexing) and as this project does (`index_select`, in `linreg_pl.regression.batches.gather`)."""
    features, targets = data(1_000_000, 100, device)
    order = torch.randperm(len(features), device=features.device)
    batches = [order[first : first + 4096] for first in range(0, len(order), 4096)]

    def per_batch(take) -> float:
        _sync(features)
        start = time.perf_counter()
        for index in batches:
            take(index)
        _sync(features)
        return (time.perf_counter() - start) / len(batches) * 1e6

    indexing, selecting = [], []
    for _ in range(3):  # interleaved
        indexing.append(per_batch(lambda index: (features[index], targets[index])))
        selecting.append(per_batch(lambda index: (features.index_select(0, index), targets.index_select(0, index))))
    a, b = statistics.median(indexing), statistics.median(selecting)
    return (
        f"Gathering a batch of 4096 random rows of 1M x 100 (features and targets): `features[index]` {a:.0f} us, "
        f"`index_select` {b:.0f} us ({a / b:.1f}x faster)."
    )


# the callback hooks Lightning calls for every batch, which `_dropped_cuts` hides where a callback only inherits them
PER_BATCH_HOOKS = tuple(
    f"on_{stage}_batch_{when}" for stage in ("train", "validation", "test", "predict") for when in ("start", "end")
) + ("on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")


def _dropped_cuts() -> tuple[str, str]:
    """Class paths of two profilers that add, to linreg_pl/fast.py's cut, the two it dropped because they change users'
    objects during a run: the callbacks' inherited per-batch hooks hidden behind None (Lightning skips a hook that
    is not callable), and that plus the model's class swapped for a subclass whose `_current_fx_name` is a plain
    attribute (it broke pickling the module mid-fit). Defined here only to measure what dropping them cost."""
    from lightning.pytorch import Callback

    from linreg_pl.fast import LightningOverheadCuts

    class HiddenHooks(LightningOverheadCuts):
        def setup(self, stage, local_rank=None, log_dir=None):
            super().setup(stage, local_rank, log_dir)
            module = getattr(self, "_lightning_module", None)
            self._hidden = []
            for callback in module.trainer.callbacks if module is not None else ():
                for hook in PER_BATCH_HOOKS:
                    if hook not in vars(callback) and getattr(type(callback), hook) is getattr(Callback, hook):
                        setattr(callback, hook, None)
                        self._hidden.append((callback, hook))

        def teardown(self, stage):
            for callback, hook in getattr(self, "_hidden", []):
                delattr(callback, hook)
            self._hidden = []
            super().teardown(stage)

    class PlainHookName:
        def __setattr__(self, name, value):
            if name == "_current_fx_name":
                object.__setattr__(self, name, value)
            else:
                super().__setattr__(name, value)

    class ClassSwap(HiddenHooks):
        def setup(self, stage, local_rank=None, log_dir=None):
            super().setup(stage, local_rank, log_dir)
            module = getattr(self, "_lightning_module", None)
            if module is not None and getattr(self, "_swapped", None) is None:
                self._swapped = (module, module.__class__)
                module.__class__ = type(module.__class__.__name__, (PlainHookName, module.__class__), {})

        def teardown(self, stage):
            if getattr(self, "_swapped", None) is not None:
                module, cls = self._swapped
                module.__class__, self._swapped = cls, None
            super().teardown(stage)

    globals().update(HiddenHooks=HiddenHooks, ClassSwap=ClassSwap)
    return f"{__name__}.HiddenHooks", f"{__name__}.ClassSwap"


def cuts_section(device: str, rounds: int) -> list[str]:
    """The default experiment's step with Lightning's profiler, with linreg_pl/fast.py's cut (what runs), and with
    the two cuts it dropped added, the variants interleaved `rounds` times so that machine noise hits them alike."""
    hidden, swapped = _dropped_cuts()
    variants = {
        "Lightning's own profiler (`--trainer.profiler null`)": ["--trainer.profiler", "null"],
        "one shared no-op profiler context (`fast.LightningOverheadCuts`, what runs)": [],
        "+ callbacks' inherited per-batch hooks hidden (dropped)": ["--trainer.profiler", hidden],
        "+ the model's class swapped for a plain `_current_fx_name` (dropped)": ["--trainer.profiler", swapped],
    }
    steps: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, extra in variants.items():
            steps[name].append(project_fit(800, 2, 10, 8, device, extra)["step_us"])
    lines = [f"## linreg_pl/fast.py, cut by cut (default experiment, median step of {rounds} interleaved runs)", ""]
    lines += ["| profiler | step | this cut saves |", "|---|---|---|"]
    previous = None
    for name, times in steps.items():
        step = statistics.median(times)
        saved = "-" if previous is None else f"{(previous - step) / previous:.0%} of the step above"
        lines.append(f"| {name} | {step:.0f} us | {saved} |")
        print(lines[-1], flush=True)
        previous = step
    return lines


GUARD_PROBE = """
import resource, sys, torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(*[nn.Linear(5000, 5000) for _ in range(4)])  # 100M parameters, 400 MB
loss = torch.tensor(1.0)
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
if sys.argv[1] == "concatenated":  # the guard until 0.3.0: one tensor of every parameter, then isfinite of it
    values = [loss.reshape(-1)] + [p.detach().reshape(-1) for p in model.parameters()]
    ok = bool(torch.isfinite(torch.cat(values)).all())
else:  # linreg_pl.callbacks.DivergenceGuard: one sum per tensor
    ok = bool(torch.isfinite(torch.stack([v.sum() for v in [loss, *(p.detach() for p in model.parameters())]])).all())
print(ok, peak() - before)
"""


def guard_section() -> list[str]:
    """DivergenceGuard's check on a 100M-parameter model: the peak memory it adds, each way in a fresh process."""
    added = {}
    for way in ("concatenated", "per-tensor sums"):
        out = subprocess.run([sys.executable, "-c", GUARD_PROBE, way], capture_output=True, text=True, check=True)
        ok, extra = out.stdout.split()
        assert ok == "True"
        added[way] = int(extra)
    lines = ["## DivergenceGuard on a 100M-parameter model (400 MB of float32 weights), peak memory the check adds", ""]
    lines += [f"- {way}: {extra / 2**20:.0f} MiB" for way, extra in added.items()]
    for line in lines[2:]:
        print(line, flush=True)
    return lines


def fmt(result: dict) -> str:
    rate = result["samples_per_s"]
    text = f"{rate / 1e6:.2f} M/s" if rate >= 1e6 else f"{rate / 1e3:.0f} k/s"
    return f"{text}, {result['step_us']:.0f} us/step"


def tree_memory(pid: int) -> int:
    """Memory (bytes) of a process and all its descendants: the sum of their proportional set sizes
    (PSS), so pages shared between the trainer and its forked workers count once, not once each."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_measured(command: list[str], cwd: str) -> tuple[float, int, str]:
    """Wall time, peak memory of the process tree (PSS, sampled every 0.1 s) and output of a command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_memory(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.communicate()[0]
    elapsed = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return elapsed, peak[0], output


def streaming_section(device: str, examples: int) -> list[str]:
    lines = ["## Streaming (data generated on the fly)", ""]
    accelerator = "gpu" if device == "cuda" else "cpu"
    common = [
        sys.executable,
        "-m",
        "linreg_pl",
        "fit",
        "--config",
        str(ROOT / "configs" / "default.yaml"),
        "--trainer.accelerator",
        accelerator,
        "--trainer.max_epochs",
        "1",
        "--data.num_inputs",
        "100",
        "--data.true_w",
        "null",
        "--data.batch_size",
        "4096",
        "--trainer.enable_model_summary",
        "false",
    ]
    with tempfile.TemporaryDirectory() as work:
        streaming = common + ["--config", str(ROOT / "configs" / "stream.yaml"), "--data.num_examples", str(examples)]
        wall, peak, output = run_measured(streaming, work)
        rate = _reported_rate(output)
        in_memory = common + ["--data.num_examples", "1111112"]
        _, peak_memory_path, output_memory = run_measured(in_memory, work)
        rate_memory = _reported_rate(output_memory)
    lines.append("| path | examples x features | peak memory (process tree, PSS) | training samples/s |")
    lines.append("|---|---|---|---|")
    lines.append(
        f"| streaming, 1 generating thread | {examples:,} x 100 | {peak / 2**30:.2f} GiB | {rate / 1e6:.2f} M/s |"
    )
    lines.append(f"| in memory | 1,111,112 x 100 | {peak_memory_path / 2**30:.2f} GiB | {rate_memory / 1e6:.2f} M/s |")
    lines.append("")
    lines.append(f"streaming / in-memory samples/s: {rate / rate_memory:.2f}x; streaming wall time {wall:.0f} s")
    for line in lines[-5:]:
        print(line, flush=True)
    return lines


def _reported_rate(output: str) -> float:
    for line in output.splitlines():
        if line.startswith("training throughput:"):
            return float(line.split()[2])
    raise RuntimeError("no 'training throughput:' line in the output:\n" + output[-2000:])


PLAIN_SCRIPT = """
import torch
from torch import nn
from torch.utils import data
true_w, true_b = torch.tensor([2, -3.4]), 4.2
features = torch.normal(0, 1, (1000, 2))
labels = (features @ true_w + true_b + torch.normal(0, 0.01, (1000,))).reshape(-1, 1)
loader = data.DataLoader(data.TensorDataset(features, labels), 10, shuffle=True)
net = nn.Linear(2, 1)
net.weight.data.normal_(0, 0.01)
net.bias.data.fill_(0)
loss, trainer = nn.MSELoss(), torch.optim.SGD(net.parameters(), lr=0.03)
for epoch in range(3):
    for x, y in loader:
        l = loss(net(x), y)
        trainer.zero_grad()
        l.backward()
        trainer.step()
    print(f"epoch {epoch + 1}, loss {loss(net(features), labels):f}")
print("w", net.weight.data, "b", net.bias.data)
"""


def process_section(repeats: int) -> list[str]:
    lines = ["## Whole process, default experiment (wall seconds, median of runs)", ""]
    config = str(ROOT / "configs" / "default.yaml")
    commands = {
        "plain seed-style script": None,  # written below
        "`python -m linreg_pl fit --config configs/default.yaml`": [sys.executable, "-m", "linreg_pl"],
        # the same CLI without linreg_pl/__main__.py's collector handling
        "the same through `linreg_pl.cli.main()` alone": [
            sys.executable,
            "-c",
            "from linreg_pl.cli import main; main()",
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / "plain.py"
        script.write_text(PLAIN_SCRIPT)
        for _ in range(repeats):  # interleaved, so that machine noise hits all alike
            for name, prefix in commands.items():
                command = [sys.executable, str(script)] if prefix is None else [*prefix, "fit", "--config", config]
                times[name].append(run_measured(command, work)[0])
    plain = statistics.median(times["plain seed-style script"])
    for name, values in times.items():
        wall = statistics.median(values)
        lines.append(f"- {name}: {wall:.2f} s ({wall / plain:.2f}x)")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sections", default="loops,cuts,guard,streaming,process")
    parser.add_argument("--streaming-examples", type=int, default=50_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", help="also write the tables (Markdown) to this file")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI built in-process gets its arguments from `project_fit`, not from here
    torch.manual_seed(0)
    sections = args.sections.split(",")
    lines = [f"# linreg_pl throughput: {machine(args.device)}", ""]
    if "loops" in sections:
        lines += loops_section(args.device, args.repeats) + [""]
    if "cuts" in sections:
        lines += cuts_section(args.device, args.repeats) + [""]
    if "guard" in sections:
        lines += guard_section() + [""]
    if "streaming" in sections:
        lines += streaming_section(args.device, args.streaming_examples) + [""]
    if "process" in sections:
        lines += process_section(args.repeats) + [""]
    text = "\n".join(lines)
    print("\n" + text)
    if args.output:
        Path(args.output).write_text(text + "\n")


def machine(device: str) -> str:
    import platform

    import lightning

    where = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    return f"{where}; torch {torch.__version__}, lightning {lightning.__version__}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    main()
