"""README step 6, done literally on a copy of the repository: delete the example, add a project of one's own and its
config, point the kit at it, and run what is left of the suite.

    python -m pytest -m slow tests/test_step_six.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLE = [  # what README step 6 deletes
    "linreg_pl/regression",
    "linreg_pl/model.py",
    "linreg_pl/data.py",
    "linreg_pl/streaming.py",
    "tests/regression",
    *(f"configs/{name}.yaml" for name in ("default", "csv", "averaged", "stream", "table-stream", "sweep")),
]
MY_EXPERIMENT = """\
trainer:
  max_epochs: 3
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val_acc, mode: max, filename: "best-{epoch}"}
model:
  class_path: my_project.model.Classifier
  init_args: {hidden: 16}
data:
  class_path: my_project.data.Blobs
"""


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    return [name for name in listed.stdout.splitlines() if (ROOT / name).is_file()]


@pytest.mark.slow
def test_deleting_the_example_leaves_a_suite_that_passes_on_ones_own_project(tmp_path):
    copy = tmp_path / "repo"
    for name in tracked_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    for name in EXAMPLE:
        path = copy / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    # a project of one's own (the README's step 2), written as any Lightning user would: here the tests' classifier
    (copy / "my_project").mkdir()
    (copy / "my_project" / "__init__.py").write_text("")
    user_models = (ROOT / "tests" / "user_models.py").read_text()
    (copy / "my_project" / "model.py").write_text(user_models)
    (copy / "my_project" / "data.py").write_text(user_models)
    (copy / "configs" / "my_experiment.yaml").write_text(MY_EXPERIMENT)
    # the kit's EXPERIMENTS: the example's entry out, one's own in
    kit = copy / "tests" / "test_template.py"
    text = kit.read_text()
    assert 'EXAMPLE_CONFIG: Experiment(["row", "prediction"]),' in text
    kit.write_text(text.replace(
        'EXAMPLE_CONFIG: Experiment(["row", "prediction"]),',
        'str(ROOT / "configs" / "my_experiment.yaml"): Experiment(["row", *(f"prediction_{i}" for i in range(3))]),',
    ))  # fmt: skip
    environment = dict(os.environ, PYTHONPATH=str(copy))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], cwd=copy,
                          env=environment, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "my_experiment" in subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_template.py"], cwd=copy,
        env=environment, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    assert not (copy / "linreg_pl" / "regression").exists()
