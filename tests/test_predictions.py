"""The predictions file for whatever a user's `predict_step` returns (tests/user_models.py and variants here).

python -m pytest tests/test_predictions.py
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import QUIET, USER_EXPERIMENT, run_user, version_dir
from torch.utils.data import DataLoader, TensorDataset
from user_models import Blobs, Classifier

from linreg_pl.cli import main
from linreg_pl.errors import ConfigError
from linreg_pl.predictions import PredictionWriter


def rows(path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


class TwoLoaders(Blobs):
    """Two predict dataloaders: the predict points, then the first 10 of them again."""

    def predict_dataloader(self):
        return [super().predict_dataloader(), DataLoader(TensorDataset(self.predict_points[:10]), batch_size=4)]


class Padded(Blobs):
    """Predict batches carrying their row numbers, the last rows repeated as a DistributedSampler pads a shard."""

    def predict_dataloader(self):
        points = self.predict_points[:10]
        order = [*range(10), 8, 9]  # 10 rows padded to 12
        batches = [{"points": points[order[i : i + 4]], "row": torch.tensor(order[i : i + 4])} for i in (0, 4, 8)]
        return DataLoader(batches, batch_size=None)


class Labels(Classifier):
    """Predicts what is not a tensor: a list of dicts, one per row, with the class name."""

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        points = batch["points"] if isinstance(batch, dict) else batch[0]
        scores, classes = self(points).max(-1)
        return [{"label": "abc"[int(c)], "score": float(s)} for c, s in zip(classes, scores, strict=True)]


def test_each_predict_dataloader_writes_a_file_of_its_own(isolated):
    run_user("fit", "--trainer.max_epochs", "1")
    checkpoint = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    main(["predict", "--config", USER_EXPERIMENT, "--data", f"{__name__}.TwoLoaders", "--ckpt_path", checkpoint,
          "--predictions.path", "out.csv", *QUIET])  # fmt: skip
    first, second = rows("out.csv"), rows("out_1.csv")
    assert len(first) == 1 + 90 and len(second) == 1 + 10
    assert [line[0] for line in second[1:]] == [str(i) for i in range(10)]  # rows of its own loader
    # the same points, the same predictions (batches of 4, not 32: float32 rounding apart)
    assert torch.allclose(torch.tensor([[float(v) for v in line] for line in second[1:]]),
                          torch.tensor([[float(v) for v in line] for line in first[1:11]]), atol=1e-6)  # fmt: skip


def test_rows_a_sampler_padded_in_are_written_once(isolated):
    # the checkpoint names the model's class: predict rebuilds that one
    run_user("fit", "--trainer.max_epochs", "1", "--model", f"{__name__}.DictBatches")
    checkpoint = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    main(["predict", "--config", USER_EXPERIMENT, "--data", f"{__name__}.Padded", "--ckpt_path", checkpoint,
          "--predictions.path", "out.csv", *QUIET])  # fmt: skip
    assert [line[0] for line in rows("out.csv")[1:]] == [str(i) for i in range(10)]


class DictBatches(Classifier):
    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return torch.softmax(self(batch["points"]), dim=-1)


def test_outputs_that_are_not_tensors_are_written_as_json_lines(isolated):
    run_user("fit", "--trainer.max_epochs", "1", "--model", f"{__name__}.Labels")
    checkpoint = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    run_user("predict", "--ckpt_path", checkpoint)
    path = version_dir(isolated, 1) / "predictions.jsonl"
    assert sorted(p.name for p in version_dir(isolated, 1).iterdir()) == ["config.yaml", "hparams.yaml",
                                                                          "predictions.jsonl"]  # fmt: skip
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(90))
    assert all(line["prediction"]["label"] in "abc" and 0 < line["prediction"]["score"] for line in lines)


def test_predictions_null_writes_no_file(isolated):
    run_user("fit", "--trainer.max_epochs", "1")
    checkpoint = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    run_user("predict", "--ckpt_path", checkpoint, "--predictions", "null")
    assert not list(isolated.rglob("predictions*"))


class Strategy:
    """Two processes' strategy, seen from one of them: `broadcast` hands on what rank zero sent (recorded)."""

    def __init__(self, from_rank_zero=None) -> None:
        self.sent, self.from_rank_zero = [], from_rank_zero

    def barrier(self) -> None:
        pass

    def broadcast(self, obj):
        self.sent.append(obj)
        return obj if self.from_rank_zero is None else self.from_rank_zero


def test_a_merge_that_fails_on_rank_zero_is_raised_by_every_process_not_waited_for(tmp_path):
    # rank zero merges the parts between collectives: had it raised alone, the other process would wait forever
    (tmp_path / "out.csv.part-0").write_text("row,prediction\r\n0,1.5\r\n")
    (tmp_path / "out.csv.part-1").write_text("row,score\r\n1,2.5\r\n")
    rank_zero = SimpleNamespace(is_global_zero=True, world_size=2, num_predict_batches=[1], strategy=Strategy())
    writer = PredictionWriter(str(tmp_path / "out.csv"))
    writer._base = tmp_path / "out.csv"
    with pytest.raises(ConfigError, match="the processes' predictions have different columns") as raised:
        writer.on_predict_epoch_end(rank_zero, None)
    assert rank_zero.strategy.sent == [raised.value]  # sent to the other process
    other = SimpleNamespace(is_global_zero=False, world_size=2, num_predict_batches=[1])
    other.strategy = Strategy(from_rank_zero=raised.value)
    with pytest.raises(ConfigError) as raised_there:
        PredictionWriter(str(tmp_path / "out.csv")).on_predict_epoch_end(other, None)
    assert raised_there.value is raised.value and other.strategy.sent == [None]


def test_a_predict_run_that_gives_no_rows_writes_only_the_row_header(tmp_path, capsys):
    (tmp_path / "out.csv.part-0").write_text("")  # predict_step returned nothing for every batch
    trainer = SimpleNamespace(is_global_zero=True, world_size=1, num_predict_batches=[1], strategy=Strategy())
    writer = PredictionWriter(str(tmp_path / "out.csv"))
    writer._base = tmp_path / "out.csv"
    writer.on_predict_epoch_end(trainer, None)
    assert (tmp_path / "out.csv").read_text() == "row\n"  # no output column is guessed
    assert capsys.readouterr().out == f"wrote 0 predictions to {tmp_path / 'out.csv'}\n"
    assert not (tmp_path / "out.csv.part-0").exists()
