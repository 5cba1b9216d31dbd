"""The synthetic data, the splits and the batch path: what users rely on, checked sample by sample."""

from __future__ import annotations

import pytest
import torch
from example_helpers import (
    EXPERIMENT_DATA,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
)

from linreg_pl.errors import ConfigError
from linreg_pl.regression.batches import BatchIndexSampler, TensorBatchLoader, gather
from linreg_pl.regression.data import SyntheticRegressionDataModule


def make(**kwargs) -> SyntheticRegressionDataModule:
    """The experiment's data module (as `configs/default.yaml` states it), with `kwargs` changed."""
    datamodule = SyntheticRegressionDataModule(**{**EXPERIMENT_DATA, **kwargs})
    datamodule.setup("fit")
    return datamodule


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = make(seed=3), make(seed=3), make(seed=4)
    for split in ("train", "val", "test"):
        for a, b in zip(first.splits[split], again.splits[split], strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(first.splits["train"][0], other.splits["train"][0])


def test_data_follow_the_true_relation_and_ignore_the_global_rng():
    torch.manual_seed(123)
    datamodule = make()
    torch.manual_seed(456)
    assert torch.equal(datamodule.splits["train"][0], make().splits["train"][0])
    features, targets = datamodule.load_tensors()
    residual = targets - (features @ torch.tensor([2.0, -3.4]) + 4.2)
    assert residual.std().item() == pytest.approx(0.01, rel=0.1)
    assert features.std().item() == pytest.approx(1.0, rel=0.1)


def test_splits_are_fractions_of_num_examples_disjoint_and_complete():
    datamodule = make(num_examples=1000, val_fraction=0.1, test_fraction=0.2)
    rows = {split: datamodule.splits[split][2] for split in ("train", "val", "test")}
    assert [len(rows[s]) for s in ("train", "val", "test")] == [700, 100, 200]
    assert torch.equal(torch.cat(list(rows.values())).sort().values, torch.arange(1000))


@pytest.mark.parametrize(
    "sizes, message",
    [
        (
            {"num_examples": 12, "val_fraction": 0.1},
            "val_fraction 0.1 of 12 examples is 1, and its R² needs at least 2; use more examples, a larger "
            "val_fraction, or 0 to have no val split",
        ),
        (
            {"num_examples": 12, "val_fraction": 0.5, "test_fraction": 0.02},
            "test_fraction 0.02 of 12 examples is none; use more examples, a larger test_fraction, or 0 to have no "
            "test split",
        ),
    ],
)
def test_a_held_out_split_too_small_for_its_metrics_is_one_line(sizes, message):
    # a 1-row validation split made torchmetrics' R² raise "Needs at least two samples" mid-run
    with pytest.raises(ConfigError) as error:
        make(**sizes)
    assert str(error.value) == f"SyntheticRegressionDataModule: {message}"


def test_true_w_none_is_drawn_from_the_seed():
    def drawn(seed: int) -> torch.Tensor:
        return make(num_inputs=5, true_w=None, seed=seed).true_w

    assert torch.equal(drawn(1), drawn(1))
    assert not torch.equal(drawn(1), drawn(2))


def epoch_batches(sampler: BatchIndexSampler, epoch: int) -> list[torch.Tensor]:
    sampler.set_epoch(epoch)
    values = torch.arange(sampler.num_samples)
    return [batch for (batch,) in TensorBatchLoader([values], sampler)]


def test_each_sample_once_per_epoch_exact_batch_size_and_fresh_shuffle():
    sampler = BatchIndexSampler(103, batch_size=10, shuffle=True, seed=7)
    first, second = epoch_batches(sampler, 0), epoch_batches(sampler, 1)
    assert [len(b) for b in first] == [10] * 10 + [3]
    assert torch.equal(torch.cat(first).sort().values, torch.arange(103))
    assert torch.equal(torch.cat(second).sort().values, torch.arange(103))
    assert not torch.equal(torch.cat(first), torch.cat(second))
    # deterministic: the same (seed, epoch) gives the same order in a new sampler
    again = BatchIndexSampler(103, batch_size=10, shuffle=True, seed=7)
    assert torch.equal(torch.cat(epoch_batches(again, 1)), torch.cat(second))


def test_unshuffled_batches_are_the_data_in_order():
    sampler = BatchIndexSampler(25, batch_size=10)
    assert torch.equal(torch.cat(epoch_batches(sampler, 0)), torch.arange(25))


@pytest.mark.parametrize("num_samples", [100, 103])
def test_training_shards_are_disjoint_cover_the_data_and_are_equal_in_length(num_samples):
    world = 3
    shards = [
        torch.cat(epoch_batches(BatchIndexSampler(num_samples, 8, True, 5, rank, world, even_shards=True), 2))
        for rank in range(world)
    ]
    assert len({len(s) for s in shards}) == 1  # equal step counts: DDP needs them
    everything = torch.cat(shards)
    assert set(everything.tolist()) == set(range(num_samples))
    # only the padding (as DistributedSampler documents) repeats samples
    assert len(everything) - num_samples == (-num_samples) % world


def test_evaluation_shards_partition_the_data_without_padding():
    shards = [torch.cat(epoch_batches(BatchIndexSampler(103, 8, False, 0, rank, 3), 0)) for rank in range(3)]
    everything = torch.cat(shards)
    assert len(everything) == 103
    assert torch.equal(everything.sort().values, torch.arange(103))


def test_gather_takes_the_rows_indexing_takes():
    generator = torch.Generator().manual_seed(0)
    features, targets = torch.randn(50, 3, generator=generator), torch.randn(50, generator=generator)
    for index in (
        torch.tensor([7, 0, 49, 7]),
        torch.tensor([3, 1], dtype=torch.int32),
        torch.tensor([], dtype=torch.long),
    ):
        gathered = gather((features, targets), index)
        assert torch.equal(gathered[0], features[index.long()]) and torch.equal(gathered[1], targets[index.long()])
    sliced = gather((features, targets), slice(10, 20))
    assert sliced[0].data_ptr() == features[10].data_ptr()  # a view, no copy
    assert torch.equal(sliced[1], targets[10:20])
