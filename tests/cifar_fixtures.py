"""Tiny CIFAR-100 data in the exact on-disk format of the official "python version".

The official files were written by Python 2: dict keys and byte strings are pickle
STRING opcodes (not Python 3 bytes), and arrays go through numpy's `_reconstruct`.
`Py2Pickler` reproduces that, so the tests read files shaped like the real ones.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from kd_data.cifar100 import COARSE_OF_FINE


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us swap one opcode writer
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def make_split(per_class: int, seed: int, num_classes: int = 100) -> dict:
    """A split dict with `per_class` random images of each fine class (coarse labels by
    CIFAR-100's fine->coarse mapping, which the reader checks)."""
    rng = np.random.default_rng(seed)
    fine = np.repeat(np.arange(num_classes), per_class)
    rng.shuffle(fine)
    count = len(fine)
    return {
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        b"fine_labels": [int(x) for x in fine],
        b"coarse_labels": [COARSE_OF_FINE[x] for x in fine],
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(count)],
        b"batch_label": b"testing batch 1 of 1",
    }


def meta() -> dict:
    return {b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}


def write_folder(root: Path, train_per_class: int = 3, test_per_class: int = 1, splits: dict | None = None) -> Path:
    """Writes root/cifar-100-python/{meta,train,test}; returns that folder."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    splits = splits or {"train": make_split(train_per_class, 1), "test": make_split(test_per_class, 2)}
    (folder / "meta").write_bytes(py2_pickle(meta()))
    for name, record in splits.items():
        (folder / name).write_bytes(py2_pickle(record) if isinstance(record, dict) else record)
    return folder


def write_archive(root: Path, **kwargs) -> Path:
    """Writes root/cifar-100-python.tar.gz with the same members as write_folder."""
    staging = root / "staging"
    folder = write_folder(staging, **kwargs)
    archive = root / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    return archive
