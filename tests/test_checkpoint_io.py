"""AtomicCheckpointIO: a checkpoint write that fails or is killed leaves the previous checkpoint whole.

    python -m pytest tests/test_checkpoint_io.py

Lightning's BoringModel stands in for the model: these tests are about files, not regression.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import mount_tmpfs
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel

from linreg_pl.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError, remove_stale_temporaries

TEMPORARY = re.compile(r"^\.last\.ckpt\.[a-z0-9_]{8}\.tmp$")


def fit(root: Path, plugin: AtomicCheckpointIO, max_epochs: int, resume: bool = False) -> Trainer:
    """Train BoringModel; `checkpoints/last.ckpt` is replaced at the end of every epoch, as in our configs."""
    trainer = Trainer(
        accelerator="cpu",
        plugins=[plugin],
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=max_epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", filename="last")],
    )
    trainer.fit(BoringModel(), ckpt_path=root / "checkpoints" / "last.ckpt" if resume else None)
    return trainer


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def assert_intact(directory: Path, before: dict[str, bytes]) -> None:
    """The directory holds the same files, byte for byte, and each loads: no partial or temporary file."""
    assert sorted(os.listdir(directory)) == sorted(before)
    for name, data in before.items():
        assert (directory / name).read_bytes() == data
        torch.load(directory / name, weights_only=True)


def message(path: Path, code: int) -> str:
    """The error's one line; ModelCheckpoint names its files by their real path."""
    return f"could not write checkpoint {os.path.realpath(path)}: {os.strerror(code)} ({errno.errorcode[code]})"


class DiskFullHalfway(AtomicCheckpointIO):
    """Writes half of each checkpoint, then fails as a full disk does."""

    def _write(self, file, data):
        file.write(data[: len(data) // 2])
        file.flush()
        directory = Path(file.name).parent
        self.half_written = {p.name: p.stat().st_size for p in directory.iterdir()}  # the test bites
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_disk_full_halfway_keeps_the_previous_checkpoint(tmp_path):
    fit(tmp_path, AtomicCheckpointIO(), max_epochs=1)
    checkpoints = tmp_path / "checkpoints"
    before = snapshot(checkpoints)
    plugin = DiskFullHalfway()
    with pytest.raises(CheckpointWriteError) as caught:
        fit(tmp_path, plugin, max_epochs=2, resume=True)
    assert str(caught.value) == message(checkpoints / "last.ckpt", errno.ENOSPC)
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert [name for name in plugin.half_written if TEMPORARY.match(name)]  # there was a partial file
    assert_intact(checkpoints, before)
    fit(tmp_path, AtomicCheckpointIO(), max_epochs=2, resume=True)  # the kept checkpoint resumes
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs: a real filesystem that runs out of space (needs root; skips without it, fails in CI)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mount_tmpfs(mount_point, "1m")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True, timeout=30)


def test_a_full_tmpfs_keeps_the_previous_checkpoint(small_tmpfs):
    fit(small_tmpfs, AtomicCheckpointIO(), max_epochs=1)
    checkpoints = small_tmpfs / "checkpoints"
    before = snapshot(checkpoints)
    filler = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)  # beside the checkpoints, not among them
    try:
        written = 0
        with pytest.raises(OSError) as full:
            while True:
                written += os.write(filler, b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        os.ftruncate(filler, written - 4096)  # one page free: less than a checkpoint (about 4.5 kB)
    finally:
        os.close(filler)
    with pytest.raises(CheckpointWriteError) as caught:
        fit(small_tmpfs, AtomicCheckpointIO(), max_epochs=2, resume=True)
    assert str(caught.value) == message(checkpoints / "last.ckpt", errno.ENOSPC)
    assert_intact(checkpoints, before)


def test_a_read_only_directory_is_a_clear_error(tmp_path):
    # root ignores permissions, so as root the write runs in a child process as `nobody`
    directory = Path(tempfile.mkdtemp(prefix="read-only-"))  # not under pytest's 0o700 root: nobody can enter
    try:
        directory.chmod(0o755)
        path = directory / "last.ckpt"
        AtomicCheckpointIO().save_checkpoint({"state_dict": BoringModel().state_dict()}, path)
        before = snapshot(directory)
        directory.chmod(0o555)
        error = _save_unprivileged(path) if os.geteuid() == 0 else _save(path)
        assert error == message(path, errno.EACCES)
        assert_intact(directory, before)
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def _save(path: Path) -> str:
    try:
        AtomicCheckpointIO().save_checkpoint({"state_dict": BoringModel().state_dict()}, path)
    except CheckpointWriteError as error:
        return str(error)
    return "saved"


def _save_unprivileged(path: Path) -> str:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # never return into pytest from here
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, _save(path).encode())
        except BaseException as error:
            os.write(write, repr(error).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks, deadline = [], time.monotonic() + 60
    with os.fdopen(read, "rb") as pipe:  # read until the child closes its end, for at most a minute
        while select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))[0]:
            if not (chunk := os.read(pipe.fileno(), 4096)):
                break
            chunks.append(chunk)
    status = wait_for(child)
    assert os.WIFEXITED(status), "the unprivileged writer did not finish within a minute"
    return b"".join(chunks).decode()


class DirectoryRemovedHalfway(AtomicCheckpointIO):
    def _write(self, file, data):
        file.write(data[: len(data) // 2])
        shutil.rmtree(Path(file.name).parent)  # the open file keeps being written; its name is gone
        file.write(data[len(data) // 2 :])


def test_a_directory_removed_during_the_write_is_a_clear_error(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    fit(tmp_path, AtomicCheckpointIO(), max_epochs=1)
    with pytest.raises(CheckpointWriteError) as caught:
        fit(tmp_path, DirectoryRemovedHalfway(), max_epochs=2, resume=True)
    assert str(caught.value) == message(checkpoints / "last.ckpt", errno.ENOENT)
    assert not checkpoints.exists()  # nothing was written anywhere in its place


KILLED_AT = 5000  # the byte at which the writer dies


class KilledAtByte(AtomicCheckpointIO):
    """Writes the first KILLED_AT bytes of the checkpoint to the disk, then is killed (SIGKILL) mid-write."""

    def _write(self, file, data):
        file.write(data[:KILLED_AT])
        file.flush()
        os.fsync(file.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


def wait_for(pid: int, timeout: float = 60) -> int:
    """The child's wait status; fails the test if it has not ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child process did not end within {timeout} s")
        time.sleep(0.01)


def test_a_process_killed_mid_write_keeps_the_previous_checkpoint(tmp_path):
    fit(tmp_path, AtomicCheckpointIO(), max_epochs=1)
    checkpoints = tmp_path / "checkpoints"
    before = snapshot(checkpoints)
    # a forked writer: a process of its own, killed as any would be, without a 4 s Lightning import. The tensor is
    # made before the fork: a child of a process whose OpenMP pool has run may hang in torch's own parallel loops
    checkpoint = {"state_dict": {"weight": torch.arange(100_000.0)}}
    writer = os.fork()
    if writer == 0:  # never return into pytest from here
        try:
            KilledAtByte().save_checkpoint(checkpoint, checkpoints / "last.ckpt")
        finally:
            os._exit(0)
    status = wait_for(writer)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # killed in the write, not finished
    # SIGKILL gives the writer no chance to remove its temporary file: it stays, under a hidden name
    # that is not a checkpoint's, until remove_stale_temporaries() at the start of the next run
    leftovers = set(os.listdir(checkpoints)) - set(before)
    assert len(leftovers) == 1 and TEMPORARY.match(name := leftovers.pop())
    assert (checkpoints / name).stat().st_size == KILLED_AT
    assert (checkpoints / "last.ckpt").read_bytes() == before["last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    assert remove_stale_temporaries(checkpoints, older_than=time.time() + 1)
    assert_intact(checkpoints, before)


def test_remove_stale_temporaries_keeps_recent_writes_and_other_files(tmp_path):
    stale, recent = tmp_path / ".last.ckpt.abcd_123.tmp", tmp_path / ".best.ckpt.0123wxyz.tmp"
    names = ("last.ckpt", "notes.tmp", ".last.ckpt.tmp", ".last.ckpt.abc.tmp", ".notes.abcd_123.tmp")
    others = [tmp_path / name for name in names]
    for path in [stale, recent, *others]:
        path.write_bytes(b"x")
        if path is not recent:
            os.utime(path, (time.time() - 3600,) * 2)  # left by an earlier run
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [recent, *others])
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_a_checkpoint_is_written_whole_with_the_usual_permissions(tmp_path):
    plugin = AtomicCheckpointIO()
    path = tmp_path / "new" / "last.ckpt"  # the directory is created, as Lightning's plugin does
    plugin.save_checkpoint({"epoch": 3}, path)
    assert os.listdir(path.parent) == ["last.ckpt"] and plugin.last_saved == str(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert plugin.load_checkpoint(path, weights_only=True) == {"epoch": 3}
    plugin.remove_checkpoint(path)
    plugin.remove_checkpoint(path)  # already gone: not an error
    assert not path.exists() and plugin.last_saved == ""
    plugin.save_checkpoint({"epoch": 4}, "bare.ckpt")  # in the working directory (the test's own)
    assert torch.load("bare.ckpt", weights_only=True) == {"epoch": 4}


def test_the_config_line_turns_it_on(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("trainer:\n  plugins: linreg_pl.checkpoint_io.AtomicCheckpointIO\n")
    cli = LightningCLI(
        BoringModel,
        run=False,
        args=["--config", str(config)],
        trainer_defaults={"logger": False},
        save_config_callback=None,
    )
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
