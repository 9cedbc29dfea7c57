"""Saving and loading state files so that a crash can never leave a half-written file to be read back."""

from __future__ import annotations

import io
import os
import tempfile

import torch


def save_atomic(state: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path`` (atomic on POSIX).

    A reader sees either the previous file or the new one, never a partial write, whatever kills us midway.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_state(path: str | os.PathLike) -> dict:
    """Load a state file with ``weights_only=True``: tensors and plain containers only, never arbitrary pickles."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)


def to_bytes(state: dict) -> bytes:
    """The state as one ``torch.save`` blob: what travels through Ray into a DeepSpeed checkpoint. A dict of tensors
    would not survive that trip: Ray deserializes its tensors as views on one shared buffer, and ``torch.save``
    then refuses them ("Cannot save multiple tensors or storages that view the same data as different types")."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(blob) -> dict:
    """Inverse of to_bytes (bytes, or a uint8 array of them), with ``weights_only=True`` like load_state."""
    return torch.load(io.BytesIO(bytes(blob)), map_location="cpu", weights_only=True)
