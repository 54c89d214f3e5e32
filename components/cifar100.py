"""Reading the "python version" of CIFAR-100 safely: locate, download, unpickle, validate.

The official files are Python 2 pickles. Unpickling can execute arbitrary code, so every
file goes through `RestrictedUnpickler`, which resolves only the three NumPy globals the
format needs. Archives are read member by member without extracting to disk; only
regular files are accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import numpy as np

ARCHIVE_NAME = "cifar-100-python.tar.gz"
FOLDER_NAME = "cifar-100-python"
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
DATA_DIR_ENV = "KD_CIFAR100_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/kd-benchmark/cifar-100").expanduser()

# The 20 superclasses in label order, as in the archive's `meta` file (a test checks it).
COARSE_LABEL_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
IMAGE_SHAPE = (32, 32, 3)
NUM_FINE_CLASSES = 100
NUM_COARSE_CLASSES = 20
SPLIT_SIZES = {"train": 50_000, "test": 10_000}

# (module, name) pairs the CIFAR pickles reference; numpy>=2 renamed numpy.core.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class DatasetError(ValueError):
    """The dataset is missing, unreadable or does not have the CIFAR-100 format."""


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (possible code execution)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the NumPy array constructors."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(
                f"refusing to load global '{module}.{name}': CIFAR-100 pickles only "
                f"contain dicts, lists, strings, ints and NumPy arrays"
            )
        return super().find_class(module, name)


@dataclasses.dataclass(frozen=True)
class CifarSplit:
    """One official split: images in HWC uint8 (RGB) and both label sets."""

    images: np.ndarray  # (N, 32, 32, 3) uint8
    fine_labels: np.ndarray  # (N,) int64 in [0, 100)
    coarse_labels: np.ndarray  # (N,) int64 in [0, 20)
    filenames: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.fine_labels)


def _str_keys(record: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in record.items()}


def unpickle(stream: BinaryIO, origin: str) -> dict:
    """Loads one CIFAR pickle (a dict) with the restricted unpickler."""
    try:
        record = RestrictedUnpickler(stream, encoding="bytes").load()
    except ForbiddenGlobalError as error:
        raise DatasetError(f"{origin}: {error}") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise DatasetError(f"{origin}: not a readable CIFAR pickle ({error!r})") from error
    if not isinstance(record, dict):
        raise DatasetError(f"{origin}: expected a pickled dict, found {type(record).__name__}")
    return _str_keys(record)


def _validated_split(record: dict, origin: str, split: str) -> CifarSplit:
    missing = {"data", "fine_labels", "coarse_labels"} - set(record)
    if missing:
        raise DatasetError(f"{origin}: missing key(s) {sorted(missing)}; found {sorted(record)}")
    data = record["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{origin}: field 'data' must be uint8 of shape (N, 3072), found {described}")
    count = data.shape[0]
    labels = {}
    for field, num_classes in (("fine_labels", NUM_FINE_CLASSES), ("coarse_labels", NUM_COARSE_CLASSES)):
        try:
            values = np.asarray(record[field], dtype=np.int64)
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{origin}: field '{field}' must be a list of ints ({error})") from error
        if values.shape != (count,):
            raise DatasetError(f"{origin}: field '{field}' has shape {values.shape}, expected ({count},) like 'data'")
        if count and (values.min() < 0 or values.max() >= num_classes):
            raise DatasetError(
                f"{origin}: field '{field}' has values in [{values.min()}, {values.max()}], "
                f"expected [0, {num_classes - 1}]"
            )
        labels[field] = values
    raw_names = record.get("filenames", [b""] * count)
    if len(raw_names) != count:
        raise DatasetError(f"{origin}: field 'filenames' has {len(raw_names)} entries, expected {count}")
    filenames = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in raw_names)
    # The files store each image as 1024 R, 1024 G, 1024 B values (CHW); models want HWC.
    images = data.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
    return CifarSplit(np.ascontiguousarray(images), labels["fine_labels"], labels["coarse_labels"], filenames)


def _read_member(source: Path, member_name: str) -> tuple[bytes, str]:
    """Returns the bytes of `cifar-100-python/<member_name>` from an archive or folder."""
    if source.is_dir():
        path = source / member_name
        if not path.is_file() or path.is_symlink():
            raise DatasetError(f"{path}: expected a regular file with the CIFAR-100 '{member_name}' pickle")
        return path.read_bytes(), str(path)
    origin = f"{source}:{FOLDER_NAME}/{member_name}"
    try:
        with tarfile.open(source, "r:gz") as archive:
            try:
                member = archive.getmember(f"{FOLDER_NAME}/{member_name}")
            except KeyError as error:
                raise DatasetError(f"{origin}: member not found in the archive") from error
            if not member.isfile():
                raise DatasetError(f"{origin}: member is a link or special file, expected a regular file")
            stream = archive.extractfile(member)
            assert stream is not None  # regular files always have a stream
            return stream.read(), origin
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetError(f"{source}: cannot read the archive ({error})") from error


def load_split(source: Path, split: str) -> CifarSplit:
    """Loads and validates the official `train` or `test` split from an archive or folder."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {split!r}")
    payload, origin = _read_member(source, split)
    return _validated_split(unpickle(io.BytesIO(payload), origin), origin, split)


def load_label_names(source: Path) -> tuple[list[str], list[str]]:
    """Returns (fine_label_names, coarse_label_names) from the `meta` file."""
    payload, origin = _read_member(source, "meta")
    meta = unpickle(io.BytesIO(payload), origin)
    names = []
    for field, expected in (("fine_label_names", NUM_FINE_CLASSES), ("coarse_label_names", NUM_COARSE_CLASSES)):
        values = meta.get(field)
        if not isinstance(values, list) or len(values) != expected:
            raise DatasetError(f"{origin}: field '{field}' must be a list of {expected} names")
        names.append([v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values])
    return names[0], names[1]


def check_official_sizes(split: CifarSplit, split_name: str, origin: str) -> None:
    """Real CIFAR-100 has 50,000 / 10,000 images with every fine class equally frequent."""
    expected = SPLIT_SIZES[split_name]
    if len(split) != expected:
        raise DatasetError(f"{origin}: split '{split_name}' has {len(split)} images, expected {expected}")
    counts = np.bincount(split.fine_labels, minlength=NUM_FINE_CLASSES)
    if counts.min() != counts.max():
        raise DatasetError(
            f"{origin}: split '{split_name}' has between {counts.min()} and {counts.max()} images per "
            f"fine class, expected {expected // NUM_FINE_CLASSES} each"
        )


def stratified_subsample(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Deterministic indices of `per_class` images of every class (all images if None).

    Indices come back sorted so the subset keeps the file's order; the same seed always
    picks the same images, and a larger `per_class` picks a superset of a smaller one.
    """
    if per_class is None:
        return np.arange(len(labels))
    if per_class <= 0:
        raise ValueError(f"per_class must be positive, got {per_class}")
    rng = np.random.default_rng(seed)
    priority = rng.permutation(len(labels))
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise DatasetError(f"class {label} has {len(members)} images, fewer than the {per_class} asked for")
        chosen.append(members[np.argsort(priority[members], kind="stable")[:per_class]])
    return np.sort(np.concatenate(chosen))


def locate(data_dir: str | os.PathLike | None, allow_download: bool = True) -> Path:
    """Finds the archive or extracted folder; downloads the archive when allowed.

    `data_dir` falls back to the `KD_CIFAR100_DIR` environment variable, then to
    ~/.cache/kd-benchmark/cifar-100. Accepts a folder holding `cifar-100-python.tar.gz` or
    `cifar-100-python/`, or the path of either one directly.
    """
    base = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()
    if base.name == ARCHIVE_NAME and base.is_file():
        return base
    if base.name == FOLDER_NAME and base.is_dir():
        return base
    for candidate in (base / FOLDER_NAME, base / ARCHIVE_NAME):
        if candidate.exists():
            return candidate
    if not allow_download:
        raise DatasetError(
            f"CIFAR-100 not found in {base}: expected {base / ARCHIVE_NAME} or {base / FOLDER_NAME}/ "
            f"(set the data directory option or {DATA_DIR_ENV})"
        )
    return download(base / ARCHIVE_NAME)


def download(target: Path, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5, timeout_s: float = 60.0) -> Path:
    """Downloads the official archive to `target`, verifying its md5 before moving it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    digest = hashlib.md5()
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DatasetError(f"download from {url} has md5 {digest.hexdigest()}, expected {md5}; not used")
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as error:
        raise DatasetError(
            f"CIFAR-100 is not at {target} and downloading it from {url} failed ({error}). "
            f"Without network access, copy {ARCHIVE_NAME} (or its extracted {FOLDER_NAME}/ folder) "
            f"into {target.parent}, or point {DATA_DIR_ENV} at the folder that holds it."
        ) from error
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target
