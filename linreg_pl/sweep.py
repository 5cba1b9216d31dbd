"""`sweep`: a hyperparameter search over any config that `fit` takes, run by Optuna, with W&B's sweep-file keys.

    python -m linreg_pl sweep --config configs/default.yaml --sweep configs/sweep.yaml
    python -m linreg_pl sweep --config configs/default.yaml --sweep configs/sweep.yaml --workers 2 --name lr

Each trial is an ordinary `fit` (`linreg_pl.cli.main`, in this process) with the trial's values as command-line
overrides, after the `--config`s and overrides given here; it runs in `<root>/sweeps/<name>/trial_<n>/` (its own
`lightning_logs/version_0` with config.yaml and checkpoints). The study lives in `<root>/sweeps/<name>/study.db`
(SQLite) or in `--storage URL` (any Optuna RDB URL); running the same command again continues it: trials this
machine was running when it died are marked failed and replaced with the same values, and the sweep stops when
`run_cap` trials have finished (complete, pruned, or failed in training: a divergence). `--workers N` runs N such
processes sharing the study; a file lock beside the study hands out the trials, so none is run twice.

Written after every trial: `trials.csv` (number, state, value, one column per parameter, run_dir); at the end:
`best.yaml` (the complete config of the best trial: `fit --config best.yaml` reruns it), a table, and with
matplotlib `history.png` and `importances.png`. docs/sweeps.md has the sweep file's keys.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import fcntl
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from linreg_pl.errors import ConfigError

try:
    import optuna
    from optuna.trial import TrialState
    from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback
except ImportError:  # the `sweep` extra is not installed: `main` says so in one line
    optuna = None
    PyTorchLightningPruningCallback = Callback

INSTALL_HINT = 'the sweep command needs Optuna: pip install -e ".[sweep]"'
WORKER_ENV = "LINREG_PL_SWEEP_WORKER"  # set in the processes `--workers N` starts: they leave the report to it
# W&B's keys that describe where a sweep runs, not what it searches: accepted and not used
WANDB_ONLY_KEYS = {"name", "description", "program", "command", "project", "entity"}
SWEEP_KEYS = {"method", "metric", "run_cap", "parameters", "early_terminate", "seed"} | WANDB_ONLY_KEYS
# the trial each pruning callback of this process reports to, by trial number (set while the trial runs)
_RUNNING: dict[int, Any] = {}


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback for trial `trial_number` of the sweep this process runs: it reports
    `monitor` after every validation and stops a trial the pruner prunes. Outside that trial (a trial's
    config.yaml given to `fit` or `validate` again) it does nothing.

    Args:
        monitor: the metric the sweep optimises.
        trial_number: the trial's number in the study.
    """

    def __init__(self, monitor: str, trial_number: int = -1) -> None:
        self.active = trial_number in _RUNNING
        super().__init__(_RUNNING.get(trial_number), monitor)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.active:
            super().on_fit_start(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a metric the model never logs: the core's MonitoredMetricsCheck stops the run with one line (any callback's
        # `monitor`, this one's too), and `_run_trial` checks the metric after the fit; no warning every epoch here
        if self.active and self.monitor in trainer.callback_metrics:
            super().on_validation_end(trainer, pl_module)


def _never_logged(metric: str, model: LightningModule, trainer: Trainer) -> str:
    logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
    return f"sweep metric {metric!r}: {type(model).__name__} never logs it; it logs: {logged}"


@dataclass
class Parameter:
    """One entry of the sweep file's `parameters`: `key` as given (a CLI key), `path` its place in the full config,
    `kind` Optuna's suggestion (`categorical`, `int`, `float`) and its arguments."""

    key: str
    path: list[str]
    kind: str
    arguments: dict[str, Any]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.arguments["choices"])
        if self.kind == "int":
            return trial.suggest_int(self.key, **self.arguments)
        value = trial.suggest_float(self.key, **{k: v for k, v in self.arguments.items() if k != "exp"})
        return math.exp(value) if self.arguments.get("exp") else value


@dataclass
class Sweep:
    """The sweep file, checked: what to search, how, and for how long."""

    method: str
    metric: str
    direction: str
    run_cap: int
    parameters: list[Parameter]
    early_terminate: dict[str, Any] | None
    seed: int | None

    def sampler(self, seed: int | None) -> Any:
        if self.method == "grid":
            space = {p.key: p.arguments["choices"] for p in self.parameters}
            return _Grid(space, seed=seed)
        if self.method == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant_liar: for parallel workers

    def pruner(self) -> Any:
        if self.early_terminate is None:
            return optuna.pruners.NopPruner()
        hyperband = self.early_terminate
        return optuna.pruners.HyperbandPruner(
            min_resource=hyperband["min_iter"],
            max_resource=hyperband.get("max_iter", "auto"),
            reduction_factor=hyperband.get("eta", 3),
        )


if optuna is not None:

    class _Grid(optuna.samplers.GridSampler):
        """Optuna's grid sampler, without its `study.stop()` once the grid is covered: that call is for
        `study.optimize`, and the sweep asks and tells trials itself, up to run_cap (the grid's size)."""

        @override
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass


class _Arguments(argparse.ArgumentParser):
    """argparse, whose errors are the CLI's one line (without the usage above them)."""

    @override
    def error(self, message: str) -> None:
        raise ConfigError(f"sweep: {message}")


def main(argv: list[str]) -> None:
    """`sweep ...`: run or continue the study, then report it (`--workers N`: in N processes)."""
    if optuna is None:
        raise ConfigError(INSTALL_HINT)
    parser = _Arguments(
        prog="linreg-pl sweep",
        allow_abbrev=False,  # `--n` must not swallow a fit argument
        description="Search hyperparameters with Optuna; every other argument (--config, overrides) goes to each "
        "trial's `fit`.",
    )
    parser.add_argument("--sweep", required=True, help="the sweep file (W&B sweep-configuration keys)")
    parser.add_argument("--name", help="the study's name and folder <root>/sweeps/<name> (default: the file's stem)")
    parser.add_argument("--storage", help="an Optuna storage URL (default: sqlite:///<root>/sweeps/<name>/study.db)")
    parser.add_argument("--workers", type=int, default=1, help="processes running trials at once on this machine")
    options, fit_args = parser.parse_known_args(argv)
    if options.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {options.workers}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours to print

    config = _full_config(fit_args)
    _check_one_process(config.get("trainer") or {})
    sweep = read_sweep(Path(options.sweep), config)
    name = options.name or Path(options.sweep).stem
    folder = Path(config.get("trainer", {}).get("default_root_dir") or ".").resolve() / "sweeps" / name
    folder.mkdir(parents=True, exist_ok=True)
    storage = options.storage or f"sqlite:///{folder / 'study.db'}"
    worker = int(os.environ.get(WORKER_ENV, 0))
    study = _open_study(sweep, storage, name, worker, shared=options.storage is not None)

    if options.workers == 1:
        _work(study, sweep, fit_args, folder, shared=options.storage is not None)
    else:
        # N processes of this same command, one worker each; they share the study through the storage
        command = [sys.executable, "-m", "linreg_pl", "sweep", *_without_workers(argv)]
        workers = [
            subprocess.Popen(command, env=dict(os.environ, **{WORKER_ENV: str(i)})) for i in range(options.workers)
        ]
        try:
            codes = [process.wait() for process in workers]
        except KeyboardInterrupt:  # Ctrl-C reached the workers too: each fails its trial and stops
            codes = [process.wait() for process in workers]
        if any(codes):
            raise SystemExit(next(code for code in codes if code))
    if WORKER_ENV not in os.environ:  # the command the user typed, not one of its workers
        report(study, sweep, config, folder)


def _check_one_process(trainer: dict[str, Any]) -> None:
    """Refuse a trial that Lightning would run as several processes of this command line (DDP's launcher starts
    `python -m linreg_pl sweep ...` again for every other rank); `ddp_spawn` starts its own processes and works."""
    strategy = trainer.get("strategy") or "auto"
    strategy = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy)
    if "spawn" in strategy.lower():
        return
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes") or 1
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    elif isinstance(devices, str) and devices != "auto":
        devices = devices.split(",")
    if devices == "auto":
        import torch

        accelerator = str(trainer.get("accelerator") or "auto")
        devices = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 1
    many = (
        devices == -1 or (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1)
    )
    if many or nodes > 1:
        raise ConfigError(
            "sweep: each trial runs in the sweep's own process, on one device; give --trainer.devices 1 (and run "
            "trials side by side with --workers N), or --trainer.strategy ddp_spawn for several devices per trial"
        )


def read_sweep(path: Path, config: dict[str, Any]) -> Sweep:
    """The sweep file, checked against the full config of the run (`config`): every problem is a ConfigError."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"--sweep {path}: cannot read it: {type(error).__name__}: {error}") from None
    where = f"sweep file {path}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping of W&B sweep keys (method, metric, parameters, ...)")
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(SWEEP_KEYS))}")
    method = spec.get("method", "bayes")
    if method not in ("bayes", "random", "grid"):
        raise ConfigError(f"{where}: method must be bayes, random or grid, got {method!r}")
    metric = spec.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise ConfigError(f"{where}: metric must be {{name: <a metric the model logs>, goal: minimize|maximize}}")
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise ConfigError(f"{where}: metric.goal must be minimize or maximize, got {goal!r}")
    entries = spec.get("parameters")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{where}: parameters must map CLI keys (e.g. data.init_args.batch_size) to their values")
    known = _config_keys(config)
    parameters = [_parameter(where, key, entry, known) for key, entry in entries.items()]
    if method == "grid":
        for p in parameters:
            if p.kind != "categorical":
                raise ConfigError(f"{where}: parameters.{p.key}: method grid needs `values` (or `value`)")
    run_cap = spec.get("run_cap")
    if run_cap is None and method == "grid":
        run_cap = math.prod(len(p.arguments["choices"]) for p in parameters)
    if isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap < 1:
        raise ConfigError(f"{where}: run_cap must be an integer >= 1 (the number of trials), got {run_cap!r}")
    seed = spec.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{where}: seed must be an integer, got {seed!r}")
    return Sweep(method, metric["name"], goal, run_cap, parameters, _early_terminate(where, spec), seed)


def _parameter(where: str, key: str, entry: Any, known: dict[str, list[str]]) -> Parameter:
    """One parameter: its key checked against the config's keys, its distribution against its range."""
    short = _short(key)
    if short not in known:
        close = difflib.get_close_matches(short, known, n=3, cutoff=0.6)
        hint = f"; close: {', '.join(_long(known[c]) for c in close)}" if close else ""
        raise ConfigError(f"{where}: parameters.{key}: the config has no such key{hint}")
    where = f"{where}: parameters.{key}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected `values: [...]`, `value: x` or `distribution` with min and max")
    path = known[short]
    if "value" in entry:
        return Parameter(key, path, "categorical", {"choices": [entry["value"]]})
    if "values" in entry:
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: values must be a non-empty list")
        for value in values:
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ConfigError(f"{where}: values must be numbers, strings, booleans or null, got {value!r}")
        return Parameter(key, path, "categorical", {"choices": values})
    low, high = entry.get("min"), entry.get("max")
    distribution = entry.get("distribution")
    if distribution is None:  # W&B's inference: integer bounds draw integers, others floats
        distribution = "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
    supported = ("uniform", "int_uniform", "q_uniform", "log_uniform_values", "log_uniform")
    if distribution not in supported:
        raise ConfigError(f"{where}: distribution {distribution!r} is not supported; use one of {', '.join(supported)}")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers or not low < high:
        raise ConfigError(f"{where}: {distribution} needs numbers min < max, got min {low!r}, max {high!r}")
    if distribution == "int_uniform":
        if not (isinstance(low, int) and isinstance(high, int)):
            raise ConfigError(f"{where}: int_uniform needs integer min and max, got min {low!r}, max {high!r}")
        return Parameter(key, path, "int", {"low": low, "high": high})
    if distribution == "log_uniform_values":
        if low <= 0:
            raise ConfigError(f"{where}: log_uniform_values needs 0 < min < max, got min {low!r}, max {high!r}")
        return Parameter(key, path, "float", {"low": float(low), "high": float(high), "log": True})
    if distribution == "log_uniform":  # W&B: min and max are the natural logarithms of the range
        return Parameter(key, path, "float", {"low": float(low), "high": float(high), "exp": True})
    if distribution == "q_uniform":
        step = entry.get("q", 1)
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not 0 < step <= high - low:
            raise ConfigError(f"{where}: q_uniform needs 0 < q <= max - min, got q {step!r}")
        return Parameter(key, path, "float", {"low": float(low), "high": float(high), "step": float(step)})
    return Parameter(key, path, "float", {"low": float(low), "high": float(high)})


def _early_terminate(where: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """W&B's `early_terminate: {type: hyperband, min_iter, max_iter, eta}`, checked: Optuna's HyperbandPruner."""
    entry = spec.get("early_terminate")
    if entry is None:
        return None
    if not isinstance(entry, dict) or entry.get("type") != "hyperband":
        raise ConfigError(f"{where}: early_terminate must be {{type: hyperband, min_iter: N, eta: 3}}")
    unknown = sorted(set(entry) - {"type", "min_iter", "max_iter", "eta"})
    if unknown:
        raise ConfigError(f"{where}: early_terminate.{unknown[0]} is not supported; give min_iter, max_iter, eta")
    for name, least in (("min_iter", 1), ("max_iter", 1), ("eta", 2)):
        value = entry.get(name, least)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: early_terminate.{name} must be an integer >= {least}, got {value!r}")
    if "min_iter" not in entry:
        raise ConfigError(f"{where}: early_terminate needs min_iter (validations before the first decision)")
    if entry.get("max_iter", entry["min_iter"]) < entry["min_iter"]:
        raise ConfigError(f"{where}: early_terminate needs min_iter <= max_iter")
    return entry


def _full_config(fit_args: list[str]) -> dict[str, Any]:
    """The complete config every trial starts from, as `fit --print_config` gives it (what a run's config.yaml
    holds): its keys are the keys a parameter may name, and best.yaml is it with the best trial's values."""
    from linreg_pl.cli import main as cli

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), _own_arguments():
        try:
            cli(["fit", *fit_args, "--print_config"])
        except SystemExit as stop:
            if stop.code:  # the CLI has said what is wrong with the arguments
                raise
    return yaml.safe_load(printed.getvalue())


def _config_keys(config: dict[str, Any]) -> dict[str, list[str]]:
    """Every key of `config` (leaves and sections, lists not entered), short form (without `init_args`) -> path."""
    keys: dict[str, list[str]] = {}

    def walk(node: Any, path: list[str]) -> None:
        if path:
            keys.setdefault(_short(".".join(path)), path)
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, [*path, str(name)])

    walk(config, [])
    return keys


def _short(key: str) -> str:
    # jsonargparse takes `--model.optimizer.init_args.lr` and `--model.init_args.optimizer.init_args.lr` alike
    return ".".join(part for part in key.split(".") if part != "init_args")


def _long(path: list[str]) -> str:
    return ".".join(path)


def _open_study(sweep: Sweep, storage: str, name: str, worker: int, shared: bool) -> Any:
    """Create or load the study `name` in `storage`; a storage that cannot be opened is one line."""
    try:
        try:
            backend = _storage(storage)
        except Exception:  # machines starting on an empty database together: one creates the tables, then all load
            time.sleep(1)
            backend = _storage(storage)
        # a fresh sampler stream for each machine, process and continuation, reproducible from the file's seed
        existing = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(backend)}.get(name, 0)
        host = zlib.crc32(socket.gethostname().encode()) if shared else 0  # other machines may share --storage
        seed = None if sweep.seed is None else (sweep.seed + 1000 * worker + existing + host) % 2**32
        return optuna.create_study(
            storage=backend,
            study_name=name,
            direction=sweep.direction,
            sampler=sweep.sampler(seed),
            pruner=sweep.pruner(),
            load_if_exists=True,
        )
    except ValueError as error:  # Optuna's own refusal: a study of that name with another direction
        raise ConfigError(f"--storage: study {name!r}: {error}") from None
    except Exception as error:  # the driver's (SQLAlchemy's) errors: a wrong URL, a server that does not answer
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"--storage {_hide_password(storage)}: cannot open it: {type(error).__name__}: {reason}"
        ) from None


def _storage(url: str) -> Any:
    # SQLite: several workers write to one file; each waits for the lock (up to 60 s) instead of failing
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    )


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


@contextlib.contextmanager
def _lock(folder: Path):
    """This machine's lock on the study: who may start the next trial, one process at a time."""
    with open(folder / "study.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _counts(trial: Any) -> bool:
    """Whether a trial counts towards run_cap: finished (complete, pruned, failed in training), running or queued;
    an interrupted one (failed without a reason) does not: it is replaced."""
    if trial.state == TrialState.FAIL:
        return "failure" in trial.user_attrs
    return True


def _fail_interrupted(study: Any, trials: list[Any]) -> bool:
    """Mark failed the trials this machine was running in a process that is gone (kill -9, power loss), and queue
    their values again: the replacement runs the same point. Returns whether there were any."""
    host, found = socket.gethostname(), False
    for trial in trials:
        owner_host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
        if trial.state != TrialState.RUNNING or owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        _fail(study, trial, again=True)
        print(f"trial {trial.number}: interrupted (its process is gone); marked FAIL and queued again", flush=True)
        found = True
    return found


def _fail(study: Any, trial: Any, again: bool) -> None:
    """Mark an unfinished trial failed; `again`: queue its values, so that its replacement runs the same point."""
    study.tell(trial.number, state=TrialState.FAIL)
    if again and trial.params:
        study.enqueue_trial(trial.params, user_attrs={"replaces": trial.number})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _work(study: Any, sweep: Sweep, fit_args: list[str], folder: Path, shared: bool) -> None:
    """Run trials until run_cap of them count."""
    while True:
        with _lock(folder):
            trials = study.get_trials(deepcopy=False)
            if _fail_interrupted(study, trials):
                trials = study.get_trials(deepcopy=False)
            # queued trials (the values of interrupted ones) are asked first, so they are not yet taken
            if sum(_counts(t) and t.state != TrialState.WAITING for t in trials) >= sweep.run_cap:
                return
            trial = study.ask()
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        # another machine (its own lock) may have asked at the same moment: the trial numbered past run_cap gives way
        ahead = study.get_trials(deepcopy=False) if shared else []
        if sum(_counts(t) for t in ahead if t.number < trial.number) >= sweep.run_cap:
            trial.set_user_attr("surplus", "asked at the same time as another machine's last trial; not run")
            study.tell(trial, state=TrialState.FAIL)
            return
        try:
            _run_trial(study, trial, sweep, fit_args, folder)
        finally:  # also when the sweep stops here (Ctrl-C, a setting refused): the file says how it stopped
            trials = study.get_trials(deepcopy=False)
            write_trials(trials, sweep, folder)
        _progress(trials, trial.number, sweep)


def _run_trial(study: Any, trial: Any, sweep: Sweep, fit_args: list[str], folder: Path) -> None:
    """One trial: `fit` with the trial's values, told to the study as complete, pruned or failed."""
    from linreg_pl.cli import main as cli

    root = folder / f"trial_{trial.number}"
    overrides = []
    for parameter in sweep.parameters:
        value = parameter.suggest(trial)
        overrides += [f"--{parameter.key}", value if isinstance(value, str) else json.dumps(value)]
    args = ["fit", *fit_args, *overrides, "--trainer.default_root_dir", str(root)]
    if sweep.early_terminate is not None:  # without a pruner, reporting every validation would only cost time
        pruning = {"class_path": f"{__name__}.TrialPruning", "init_args": {"monitor": sweep.metric}}
        pruning["init_args"]["trial_number"] = trial.number
        args += ["--trainer.callbacks+", json.dumps(pruning)]
    _RUNNING[trial.number] = trial
    try:
        with _own_arguments():
            run = cli(args)
        # under ddp_spawn the trial's processes leave their verdict in the storage (Optuna's documented way)
        for callback in run.trainer.callbacks:
            if isinstance(callback, TrialPruning):
                callback.check_pruned()
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return
    except SystemExit as stop:
        if stop.code == 1:  # the run diverged (or could not write a checkpoint): a result of these values
            trial.set_user_attr("failure", "exit status 1")
            study.tell(trial, state=TrialState.FAIL)
            return
        # a setting the CLI refused (status 2, said in one line) stops the sweep; so does Ctrl-C or SIGTERM, and a
        # rerun then runs the interrupted trial's values again
        _fail(study, trial, again=stop.code != 2)
        raise
    except BaseException:
        _fail(study, trial, again=True)
        raise
    finally:
        del _RUNNING[trial.number]
    metrics = run.trainer.callback_metrics
    if sweep.metric not in metrics:
        study.tell(trial, state=TrialState.FAIL)
        raise ConfigError(_never_logged(sweep.metric, run.model, run.trainer))
    value = float(metrics[sweep.metric])
    if not math.isfinite(value):
        trial.set_user_attr("failure", f"{sweep.metric} = {value}")
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, value)


def _run_dir(folder: Path, number: int) -> str:
    """Trial `number`'s version directory, `trial_<number>/<logger name>/version_0`, once it has its config.yaml."""
    found = sorted((folder / f"trial_{number}").glob("*/*/config.yaml"))
    return str(found[0].parent) if found else ""


def write_trials(trials: list[Any], sweep: Sweep, folder: Path) -> None:
    """trials.csv: one row per trial, written whole to a temporary file and renamed (readers never see half)."""
    keys = [p.key for p in sweep.parameters]
    handle = tempfile.NamedTemporaryFile("w", dir=folder, prefix=".trials-", suffix=".csv", delete=False, newline="")
    with handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["number", "state", "value", *keys, "run_dir"])
        for trial in trials:
            value = "" if trial.value is None else repr(trial.value)
            params = [_value(p, trial.params[p.key]) if p.key in trial.params else "" for p in sweep.parameters]
            writer.writerow([trial.number, trial.state.name, value, *params, _run_dir(folder, trial.number)])
    os.replace(handle.name, folder / "trials.csv")


def _progress(trials: list[Any], number: int, sweep: Sweep) -> None:
    trial = trials[number]
    finished = sum(_counts(t) and t.state.is_finished() for t in trials)
    value = "" if trial.value is None else f" {sweep.metric} {trial.value:.6g}"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = ""
    if complete:
        top = (max if sweep.direction == "maximize" else min)(complete, key=lambda t: t.value)
        best = f", best {top.value:.6g} (trial {top.number})"
    print(f"trial {number} {trial.state.name}{value}{best} [{finished}/{sweep.run_cap}]", flush=True)


def report(study: Any, sweep: Sweep, config: dict[str, Any], folder: Path) -> None:
    """The end of a sweep: trials.csv, the table, best.yaml and the pictures."""
    trials = study.get_trials(deepcopy=False)
    write_trials(trials, sweep, folder)
    rows = [["trial", "state", sweep.metric, *(p.key.rsplit(".", 1)[-1] for p in sweep.parameters)]]
    for trial in trials:
        value = "" if trial.value is None else f"{trial.value:.6g}"
        rows.append(
            [
                str(trial.number),
                trial.state.name,
                value,
                *(_shown(_value(p, trial.params.get(p.key))) for p in sweep.parameters),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not any(t.state == TrialState.COMPLETE for t in trials):
        print(f"no trial completed; trials: {folder / 'trials.csv'}")
        return
    best = study.best_trial
    values = {p.key: _value(p, best.params[p.key]) for p in sweep.parameters}
    write_best(config, sweep, values, folder / "best.yaml")
    print(f"best: trial {best.number}, {sweep.metric} {best.value:.6g}; rerun it: fit --config {folder / 'best.yaml'}")
    draw(study, folder)


def _shown(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _value(parameter: Parameter, suggested: Any) -> Any:
    """The value the trial ran with (`log_uniform`: Optuna draws the logarithm)."""
    if suggested is None:
        return None
    return math.exp(suggested) if parameter.arguments.get("exp") else suggested


def write_best(config: dict[str, Any], sweep: Sweep, values: dict[str, Any], path: Path) -> None:
    """The full config with the best trial's values: `fit --config best.yaml` reruns the trial."""
    best = json.loads(json.dumps(config))  # a deep copy of plain YAML data
    for parameter in sweep.parameters:
        node = best
        for part in parameter.path[:-1]:
            node = node.setdefault(part, {})
        node[parameter.path[-1]] = values[parameter.key]
    header = f"# the best trial of sweep {path.parent.name}: python -m linreg_pl fit --config {path}\n"
    path.write_text(header + yaml.safe_dump(best, sort_keys=False))


def draw(study: Any, folder: Path) -> None:
    """history.png and importances.png (Optuna's matplotlib plots) when matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    with _quiet_experimental():
        plot_optimization_history(study).figure.savefig(folder / "history.png", bbox_inches="tight")
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        varied = any(len({repr(t.params.get(k)) for t in complete}) > 1 for k in complete[0].params)
        drawn = [folder / "history.png"]
        if len(complete) > 1 and varied:  # importances need values that differ
            plot_param_importances(study).figure.savefig(folder / "importances.png", bbox_inches="tight")
            drawn.append(folder / "importances.png")
        plt.close("all")
    print(f"pictures: {', '.join(map(str, drawn))}")


@contextlib.contextmanager
def _quiet_experimental():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@contextlib.contextmanager
def _own_arguments():
    """`sys.argv` without the sweep's arguments while `main(args)` runs a trial: LightningCLI warns when it sees
    both (its arguments are `args`)."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def _without_workers(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept
