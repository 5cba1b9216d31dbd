"""Streaming synthetic data: generated on demand, the same values every time, each example once per epoch."""

from __future__ import annotations

import pytest
import torch
from example_helpers import (
    SMALL_STREAM,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.regression.streaming import StreamingLoader, SyntheticChunks, SyntheticStreamDataModule

TRUE_W = torch.tensor([1.0, -2.0, 0.5])


def chunks(**kwargs) -> SyntheticChunks:
    settings = dict(
        true_w=TRUE_W,
        true_b=0.3,
        noise_std=0.0,
        seed=5,
        chunk_size=20,
        batch_size=5,
        chunks=range(10),
        last_chunk_size=20,
        shuffle=True,
    )
    settings.update(kwargs)
    return SyntheticChunks(**settings)


def rows(batches) -> list[tuple[float, ...]]:
    return [tuple(row.tolist()) for features, _ in batches for row in features]


def everything(dataset: SyntheticChunks) -> set[tuple[float, ...]]:
    return {tuple(row.tolist()) for index in dataset.chunks for row in dataset.chunk(index)[0]}


def test_an_example_always_has_the_same_value_and_follows_the_truth():
    first, again = chunks().chunk(3), chunks().chunk(3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(chunks().chunk(4)[0], first[0])
    assert not torch.equal(chunks(seed=6).chunk(3)[0], first[0])
    assert torch.allclose(first[1], first[0] @ TRUE_W + 0.3)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_example_once_per_epoch_exact_batches_fresh_shuffle(num_workers):
    dataset = chunks()
    loader = StreamingLoader(dataset, num_workers=num_workers, device=None)
    loader.sampler.set_epoch(0)
    first = list(loader)
    assert len(first) == len(loader) == 40
    assert all(len(features) == 5 for features, _ in first)
    assert sorted(rows(first)) == sorted(everything(dataset))
    loader.sampler.set_epoch(1)
    second = rows(loader)
    assert sorted(second) == sorted(rows(first)) and second != rows(first)


def test_processes_and_workers_get_disjoint_shares_that_cover_the_split():
    world, shares = 3, []
    for rank in range(world):
        dataset = chunks(rank=rank, num_replicas=world, even_shards=False)
        dataset.set_epoch(2)
        shares.append(rows(StreamingLoader(dataset, num_workers=2, device=None)))
    union = [row for share in shares for row in share]
    assert len(union) == len(set(union)) == 200
    assert set(union) == everything(chunks())


def test_even_shards_give_every_process_the_same_number_of_batches():
    counts = [len(StreamingLoader(chunks(rank=r, num_replicas=3, even_shards=True), 0)) for r in range(3)]
    assert counts == [16, 16, 16]  # 10 chunks padded to 12, 4 chunks of 4 batches each


def test_splits_fall_on_chunk_boundaries_and_the_short_chunk_is_last():
    datamodule = SyntheticStreamDataModule(
        num_examples=1050, batch_size=10, chunk_size=100, val_fraction=0.1, test_fraction=0.1
    )
    assert datamodule.chunk_ranges == {"train": range(9), "val": range(9, 10), "test": range(10, 11)}
    test_loader = datamodule.test_dataloader()
    assert sum(len(f) for f, _ in test_loader) == 50


def test_streaming_fit_recovers_the_parameters(isolated):
    cli = run_cli(
        "fit",
        *SMALL_STREAM,
    )
    weight, bias = cli.model.learned_parameters()
    assert (weight - torch.tensor([2.0, -3.4])).abs().max() < 0.01 and abs(bias.item() - 4.2) < 0.01


def test_a_short_training_chunk_without_val_or_test_is_refused():
    from linreg_pl.errors import ConfigError

    with pytest.raises(
        ConfigError, match="without val/test splits, num_examples must be a multiple of chunk_size \\(100\\), got 1050"
    ):
        SyntheticStreamDataModule(num_examples=1050, batch_size=10, chunk_size=100, val_fraction=0, test_fraction=0)
