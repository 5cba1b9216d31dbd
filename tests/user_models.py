"""A user's own models and data, written as a Lightning user would, with nothing from this package: the template
kit (test_template.py) runs them through every subcommand by class path, in-process and in DDP worker processes
(PYTHONPATH=tests).

- `Classifier` on `Blobs`: 3 classes of 2-D points, integer targets; it logs `val_loss` and `val_acc`
  (Lightning's usual names, not the regression example's `val/loss`), and predicts class probabilities [n, 3].
- `TwoOutputRegressor` on `Plane`: two targets from 3 inputs; it predicts a dict of two columns.
- `SquareAutoencoder` on `Squares`: 1x8x8 images in dict batches, a conv autoencoder whose `forward` returns a
  tuple, `example_input_array`, OneCycleLR sized from `trainer.estimated_stepping_batches`; no `test_step`.
- `StoreRegressor` on `Sales`: `forward(features, store)`, the second input an embedding index; the data module
  saves no hyperparameters (export rebuilds it from the run's config.yaml); no `predict_step`.
- `LazyRegressor` on `Plane`: `nn.LazyLinear` (its input size comes from the first batch); `forward` returns a dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

CENTRES = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])


class EpochShuffle(Sampler[int]):
    """A fresh order of `size` indices every epoch, drawn from (seed, epoch). Lightning calls a DataLoader's
    `sampler.set_epoch(epoch)` before every epoch, so a run resumed from a checkpoint draws the orders that the
    run never stopped drew; `shuffle=True` draws from the global generator, whose state no checkpoint holds."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class Blobs(LightningDataModule):
    """Points around 3 centres, labelled by their centre; train/val/predict splits, DataLoaders.

    Args:
        num_examples: points in total: 70% train, 15% val, 15% predict.
        batch_size: examples per batch.
        seed: the data's own generator.
    """

    def __init__(self, num_examples: int = 600, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()  # the checkpoint names this class and its arguments (export builds it)
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, 3, (num_examples,), generator=generator)
        points = CENTRES[labels] + torch.randn(num_examples, 2, generator=generator)
        cut1, cut2 = int(0.7 * num_examples), int(0.85 * num_examples)
        self.train_set = TensorDataset(points[:cut1], labels[:cut1])
        self.val_set = TensorDataset(points[cut1:cut2], labels[cut1:cut2])
        self.predict_points = points[cut2:]

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffle(len(self.train_set), self.hparams.seed)
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.predict_points), batch_size=self.hparams.batch_size)


class Classifier(LightningModule):
    """A small MLP classifier.

    Args:
        num_classes: output classes.
        hidden: hidden units.
        lr: Adam's learning rate.
    """

    def __init__(self, num_classes: int = 3, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.val_acc = MulticlassAccuracy(num_classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.net(points)

    def training_step(self, batch, batch_idx):
        points, labels = batch
        loss = F.cross_entropy(self(points), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        points, labels = batch
        logits = self(points)
        self.log("val_loss", F.cross_entropy(logits, labels))
        self.val_acc(logits, labels)
        self.log("val_acc", self.val_acc)

    def test_step(self, batch, batch_idx):
        points, labels = batch
        self.log("test_loss", F.cross_entropy(self(points), labels))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return torch.softmax(self(batch[0]), dim=-1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class Plane(LightningDataModule):
    """Two targets, `sum = x·[1, 2, 3]` and `difference = x·[1, -1, 0] + 0.5`, from 3 inputs; the predict
    batches are dicts with the inputs and each row's number in a `row` field (its position in the validation set).

    Args:
        num_examples: rows in total: 80% train, 20% val (also test and predict).
        batch_size: rows per batch.
    """

    def __init__(self, num_examples: int = 400, batch_size: int = 20) -> None:
        super().__init__()
        self.save_hyperparameters()
        generator = torch.Generator().manual_seed(1)
        inputs = torch.randn(num_examples, 3, generator=generator)
        targets = torch.stack(
            [inputs @ torch.tensor([1.0, 2.0, 3.0]), inputs @ torch.tensor([1.0, -1.0, 0.0]) + 0.5], 1
        )
        cut = int(0.8 * num_examples)
        self.train_set = TensorDataset(inputs[:cut], targets[:cut])
        self.val_inputs, self.val_targets = inputs[cut:], targets[cut:]

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffle(len(self.train_set))
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.val_inputs, self.val_targets), batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        rows = [{"inputs": inputs, "row": row} for row, inputs in enumerate(self.val_inputs)]
        return DataLoader(rows, batch_size=self.hparams.batch_size)  # batches of dicts, as collated


class TwoOutputRegressor(LightningModule):
    """`nn.Linear(3, 2)` trained with MSE; predicts `{"sum": ..., "difference": ...}`.

    Args:
        lr: SGD's learning rate.
    """

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(3, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        loss = F.mse_loss(self(inputs), targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", F.mse_loss(self(batch[0]), batch[1]))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        outputs = self(batch["inputs"])
        return {"sum": outputs[:, 0], "difference": outputs[:, 1]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Squares(LightningDataModule):
    """1x8x8 images, each a bright 3x3 square at a random place on noise; batches are dicts
    `{"image": [n, 1, 8, 8], "label": [n]}`, the label the quadrant of the square's centre.

    Args:
        num_examples: images in total: 75% train, 12.5% val, 12.5% predict.
        batch_size: images per batch.
        noise_std: the background noise.
    """

    def __init__(self, num_examples: int = 512, batch_size: int = 16, noise_std: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        generator = torch.Generator().manual_seed(2)
        images = noise_std * torch.randn(num_examples, 1, 8, 8, generator=generator)
        corners = torch.randint(0, 6, (num_examples, 2), generator=generator)
        for image, (top, left) in zip(images, corners.tolist(), strict=True):
            image[0, top : top + 3, left : left + 3] += 1.0
        labels = 2 * (corners[:, 0] >= 3) + (corners[:, 1] >= 3)
        cut1, cut2 = int(0.75 * num_examples), int(0.875 * num_examples)
        self.splits = {
            "train": ImageSet(images[:cut1], labels[:cut1]),
            "val": ImageSet(images[cut1:cut2], labels[cut1:cut2]),
            "predict": ImageSet(images[cut2:], labels[cut2:]),
        }

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffle(len(self.splits["train"]))
        return DataLoader(self.splits["train"], batch_size=self.hparams.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["predict"], batch_size=self.hparams.batch_size)


class ImageSet(Dataset):
    """Images and labels as `{"image", "label"}` dicts: the default collate stacks them into dict batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


class SquareAutoencoder(LightningModule):
    """A conv autoencoder: 1x8x8 image -> `code_size` numbers -> image. `forward` returns both.

    Args:
        code_size: the code's size.
        max_lr: OneCycleLR's peak learning rate.
    """

    def __init__(self, code_size: int = 2, max_lr: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, code_size)
        )
        self.decoder = nn.Sequential(
            nn.Linear(code_size, 64), nn.ReLU(), nn.Unflatten(1, (4, 4, 4)), nn.ConvTranspose2d(4, 1, 4, 2, 1)
        )
        self.example_input_array = torch.zeros(4, 1, 8, 8)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encoder(image)
        return self.decoder(code), code

    def training_step(self, batch, batch_idx):
        reconstruction, _ = self(batch["image"])
        loss = F.mse_loss(reconstruction, batch["image"])
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        reconstruction, _ = self(batch["image"])
        self.log("val_loss", F.mse_loss(reconstruction, batch["image"]))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        reconstruction, code = self(batch["image"])
        return {"code": code, "error": (reconstruction - batch["image"]).pow(2).mean((1, 2, 3))}

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.max_lr)
        # as Lightning's docs size it: every optimiser step of the run, limits and max_epochs included
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.max_lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Sales(LightningDataModule):
    """Sales of 4 stores: `sales = features·[1, -2, 0.5] + offset[store]`; batches are tuples
    `(features [n, 3], store [n] int64, sales [n])`. It saves no hyperparameters, as many data modules don't.

    Args:
        num_examples: rows in total: 80% train, 20% val (also test).
        batch_size: rows per batch.
    """

    def __init__(self, num_examples: int = 400, batch_size: int = 20) -> None:
        super().__init__()
        self.batch_size = batch_size
        generator = torch.Generator().manual_seed(3)
        features = torch.randn(num_examples, 3, generator=generator)
        stores = torch.randint(0, 4, (num_examples,), generator=generator)
        sales = features @ torch.tensor([1.0, -2.0, 0.5]) + torch.tensor([0.0, 5.0, -3.0, 1.0])[stores]
        cut = int(0.8 * num_examples)
        self.train_set = TensorDataset(features[:cut], stores[:cut], sales[:cut])
        self.val_set = TensorDataset(features[cut:], stores[cut:], sales[cut:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=EpochShuffle(len(self.train_set)))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class StoreRegressor(LightningModule):
    """A linear model of the features plus a learned offset per store (an embedding of the store's index).

    Args:
        num_stores: how many store indices the embedding holds.
        lr: Adam's learning rate.
    """

    def __init__(self, num_stores: int = 4, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = nn.Linear(3, 1)
        self.store_offset = nn.Embedding(num_stores, 1)

    def forward(self, features: torch.Tensor, store: torch.Tensor) -> torch.Tensor:
        return (self.linear(features) + self.store_offset(store)).squeeze(-1)

    def training_step(self, batch, batch_idx):
        features, store, sales = batch
        loss = F.mse_loss(self(features, store), sales)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        features, store, sales = batch
        self.log("val_loss", F.mse_loss(self(features, store), sales))

    def test_step(self, batch, batch_idx):
        features, store, sales = batch
        self.log("test_loss", F.mse_loss(self(features, store), sales))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class LazyRegressor(LightningModule):
    """`Plane`'s two targets by a small MLP whose first layer is `nn.LazyLinear`: its input size comes from the
    first batch it sees, and a checkpoint holds it. `forward` returns a dict.

    Args:
        hidden: hidden units.
        lr: Adam's learning rate.
    """

    def __init__(self, hidden: int = 8, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.LazyLinear(hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.net(inputs)
        return {"sum": outputs[:, 0], "difference": outputs[:, 1]}

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        outputs = self(inputs)
        loss = F.mse_loss(torch.stack([outputs["sum"], outputs["difference"]], 1), targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        outputs = self(batch[0])
        self.log("val_loss", F.mse_loss(torch.stack([outputs["sum"], outputs["difference"]], 1), batch[1]))

    def test_step(self, batch, batch_idx):
        outputs = self(batch[0])
        self.log("test_loss", F.mse_loss(torch.stack([outputs["sum"], outputs["difference"]], 1), batch[1]))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch["inputs"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class SavesTheModule(Callback):
    """A user's export callback: the whole module, pickled, when training ends (as MLflow's log_model does)."""

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(pl_module, "module.pt")
