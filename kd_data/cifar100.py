"""Reading the "python version" of CIFAR-100 safely: locate, download, unpickle, validate.

The official files are Python 2 pickles. Unpickling can execute arbitrary code, so every
file goes through `RestrictedUnpickler`, which resolves only the NumPy globals the format
needs, and those to stand-ins that build an array only from bytes the file really holds.
Archives are streamed member by member without extracting to disk (regular files only);
every size is bounded before it is read, decompressed or unpickled, and the gzip trailer
(CRC-32 and length) is verified. A hostile or corrupt file fails with a `DatasetError`
naming the file and the field, within ~100 MB and a few seconds (docs/reliability.md).

`data_dir` may be a local path or any `tf.io.gfile` URI (gs://, s3://, hdfs://, ram://...).
Local paths are read with Python's own I/O (no TensorFlow needed); URIs through
`tf.io.gfile`, imported on first use on whichever worker runs the read.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, BinaryIO

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
# CIFAR-100's fixed superclass of each fine class, read from the real archive (a test checks it).
COARSE_OF_FINE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
IMAGE_SHAPE = (32, 32, 3)
NUM_FINE_CLASSES = 100
NUM_COARSE_CLASSES = 20
SPLIT_SIZES = {"train": 50_000, "test": 10_000}

# Checksums of the real files, used when a run requires the official dataset: each member
# must match the official archive's (md5, as torchvision records them) or this project's
# re-packed copy's (../shared/data, sha256).
OFFICIAL_MEMBER_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
REPACKED_MEMBER_SHA256 = {
    "train": "6fff6a522ece2de1bac17d5401cf7339e2668fe64bfcbe0af06946bf7e6b19ef",
    "test": "030f828ed1b91d014d25fbaffd03b5ec5fe0f96f6765be2d7558a9705ff4d028",
    "meta": "f964f0d8b22fa2299991ef47d58da3f461a0d0fdca4704b256e6fb107547ba15",
}

# Bounds on what is read before it is decompressed or unpickled. The largest legitimate
# members are 155 MB (train), 31 MB (test) and 1.5 KB (meta); the tar stream is 186 MB (177.5 MiB).
MAX_MEMBER_BYTES = {"train": 160 << 20, "test": 34 << 20, "meta": 1 << 20}
MAX_ARCHIVE_MEMBERS = 64  # the official archive has 4 (the folder and its 3 files)
MAX_ARCHIVE_BYTES = 200 << 20  # the decompressed tar stream, padding included (real: 178 MiB)
MAX_TAR_HEADER_BYTES = 64 << 10  # data of a PAX or GNU long-name header
# Pickle opcodes executed per file: the real train file needs 200,372 (50,000 file names,
# 2 x 50,000 labels). Each opcode creates at most one object, so this bounds the element count.
MAX_PICKLE_OPCODES = 300_000
MAX_PICKLE_DEPTH = 4  # dict -> list -> value: the real files nest 2 levels
MAX_ARRAY_DIMS = 4
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class DatasetError(ValueError):
    """The dataset is missing, unreadable or does not have the CIFAR-100 format."""


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (possible code execution)."""


def _text(name: bytes | str, limit: int = 60) -> str:
    """A dict key or name as text, bounded in length."""
    text = name.decode("latin1") if isinstance(name, bytes) else name
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 60) -> str:
    """A bounded description for error messages (hostile values may be huge or deep)."""
    text = repr(value) if isinstance(value, (bytes, str, int, float, bool)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _NdarrayType:
    """Stand-in for `numpy.ndarray`: only accepted as `_reconstruct`'s first argument."""


class _DtypeBuilder:
    """Stand-in for `numpy.dtype(spec, align, copy)` and its `__setstate__`: plain numeric
    dtypes only, so garbage state is an UnpicklingError rather than NumPy's OverflowError."""

    __slots__ = ("dtype",)
    SPECS = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        if spec not in self.SPECS:
            raise pickle.UnpicklingError(f"unsupported array dtype {_short(spec)}; allowed: {list(self.SPECS)}")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: Any) -> None:
        if (not isinstance(state, tuple) or len(state) not in (8, 9) or state[2:5] != (None, None, None)
                or state[5:7] != (-1, -1)):  # no sub-array, names or fields; the spec's own size
            raise pickle.UnpicklingError(f"invalid dtype state {_short(state)}")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"invalid dtype byte order {_short(order)}")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayBuilder:
    """Stand-in for `numpy.core.multiarray._reconstruct(ndarray, shape, dtype)`.

    NumPy allocates the requested shape at once (a 2**62-element shape is a MemoryError; an
    array whose data never follows reads as zeros). Here the array exists only once
    `__setstate__` supplies bytes whose length is exactly shape x itemsize.
    """

    __slots__ = ("array",)

    def __init__(self, subtype: Any, shape: Any = None, dtype: Any = None):
        if subtype is not _NdarrayType:
            raise pickle.UnpicklingError("_reconstruct may only build numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise pickle.UnpicklingError("array state given twice")
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError(f"invalid array state {_short(state)}")
        _, shape, dtype, fortran, raw = state
        if (not isinstance(shape, tuple) or len(shape) > MAX_ARRAY_DIMS
                or not all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"invalid array shape {_short(shape)}")
        if not isinstance(dtype, _DtypeBuilder) or not isinstance(raw, bytes) or not isinstance(fortran, int):
            raise pickle.UnpicklingError("array state must be (version, shape, dtype, fortran flag, bytes)")
        count = 1
        for n in shape:
            count *= n
        if count * dtype.dtype.itemsize != len(raw):
            raise pickle.UnpicklingError(f"array of shape {shape} and dtype {dtype.dtype} needs "
                                         f"{count * dtype.dtype.itemsize} bytes, the file holds {len(raw)}")
        self.array = np.frombuffer(raw, dtype.dtype).reshape(shape, order="F" if fortran else "C")


_MUTABLE_CONTAINERS = (list, dict, set, bytearray)


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, whose opcodes can be bounded
    """Unpickler for untrusted CIFAR files.

    Refuses every global except NumPy's array constructors (resolved to the stand-ins above),
    bounds the number of opcodes and the size of integers, refuses duplicate dict keys and
    second references to a list/dict/set (so the result is a tree, whose depth `unpickle`
    checks: no 3 KB pickle of shared lists can expand exponentially).
    """

    GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): _ArrayBuilder,
        ("numpy._core.multiarray", "_reconstruct"): _ArrayBuilder,
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): _DtypeBuilder,
    }

    def __init__(self, stream: BinaryIO):
        super().__init__(stream, encoding="bytes")
        self.opcodes = 0

    def find_class(self, module: str, name: str):
        if (module, name) not in self.GLOBALS:
            raise ForbiddenGlobalError(
                f"refusing to load global '{module}.{name}': CIFAR-100 pickles only "
                f"contain dicts, lists, strings, ints and NumPy arrays"
            )
        return self.GLOBALS[module, name]

    def field_hint(self) -> str:
        """`field 'K': ` for the top-level dict key whose value was being built, else ''."""
        frames = [*self.metastack, self.stack]
        for depth in range(len(frames) - 1, 0, -1):
            parent, frame = frames[depth - 1], frames[depth]
            if parent and isinstance(parent[-1], dict) and frame:  # MARK k1 v1 ... k [value in progress]
                key = frame[-2] if len(frame) % 2 == 0 else frame[-1]
                if isinstance(key, (bytes, str)):
                    return f"field '{_text(key)}': "
                return ""
        return ""

    def _refuse_shared_container(self) -> None:
        if isinstance(self.stack[-1], _MUTABLE_CONTAINERS):
            raise pickle.UnpicklingError("a second reference to a list or dict (the CIFAR files have none)")

    def load_get(self) -> None:
        super().load_get()
        self._refuse_shared_container()

    def load_binget(self) -> None:
        super().load_binget()
        self._refuse_shared_container()

    def load_long_binget(self) -> None:
        super().load_long_binget()
        self._refuse_shared_container()

    def load_dup(self) -> None:
        super().load_dup()
        self._refuse_shared_container()

    def load_long4(self) -> None:
        (length,) = struct.unpack("<i", self.read(4))
        if not 0 <= length <= 256:
            raise pickle.UnpicklingError(f"integer of {length} bytes (at most 256 allowed)")
        self.append(pickle.decode_long(self.read(length)))

    def load_setitem(self) -> None:
        target, key = self.stack[-3], self.stack[-2]
        if isinstance(target, dict) and key in target:
            raise pickle.UnpicklingError(f"duplicate dict key {_short(key)}")
        super().load_setitem()

    def load_setitems(self) -> None:
        keys = self.stack[0::2]  # the items after the MARK; the dict is below the MARK
        target = self.metastack[-1][-1]
        if len(set(keys)) != len(keys) or (isinstance(target, dict) and any(k in target for k in keys)):
            raise pickle.UnpicklingError("duplicate dict key")
        super().load_setitems()


def _counted(operation):
    def run(unpickler: RestrictedUnpickler) -> None:
        unpickler.opcodes += 1
        if unpickler.opcodes > MAX_PICKLE_OPCODES:
            raise pickle.UnpicklingError(f"more than {MAX_PICKLE_OPCODES:,} pickle opcodes (elements)")
        operation(unpickler)
    return run


# Every opcode goes through the counter, with this class's overrides where it has them.
RestrictedUnpickler.dispatch = {code: _counted(getattr(RestrictedUnpickler, operation.__name__))
                                for code, operation in pickle._Unpickler.dispatch.items()}


@dataclasses.dataclass(frozen=True)
class CifarSplit:
    """One official split: images in HWC uint8 (RGB) and both label sets."""

    images: np.ndarray  # (N, 32, 32, 3) uint8
    fine_labels: np.ndarray  # (N,) int64 in [0, 100)
    coarse_labels: np.ndarray  # (N,) int64 in [0, 20)
    filenames: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.fine_labels)


_NESTED = (dict, list, tuple, set, frozenset)


def _check_depth(value: Any, origin: str) -> None:
    """Containers nest at most MAX_PICKLE_DEPTH levels; visits are bounded like the opcodes."""
    pending, visited = [(value, 1)], 0
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(item)
        else:
            continue
        if depth > MAX_PICKLE_DEPTH:
            raise DatasetError(f"{origin}: containers nested deeper than {MAX_PICKLE_DEPTH} levels")
        visited += len(children)
        if visited > MAX_PICKLE_OPCODES:
            raise DatasetError(f"{origin}: more than {MAX_PICKLE_OPCODES:,} elements (shared references)")
        pending.extend((child, depth + 1) for child in children if isinstance(child, _NESTED))


def _finished_record(record: dict, origin: str) -> dict:
    """str keys (Python 2 pickles give bytes) and finished arrays; refuses ambiguous keys."""
    result = {}
    for key, value in record.items():
        if not isinstance(key, (bytes, str)):
            raise DatasetError(f"{origin}: key {_short(key)} is not a string")
        name = key.decode("latin1") if isinstance(key, bytes) else key
        if name in result:
            raise DatasetError(f"{origin}: key '{_text(name)}' appears twice (as a byte string and a string)")
        if isinstance(value, _ArrayBuilder):
            if value.array is None:
                raise DatasetError(f"{origin}: field '{_text(name)}' is an array without data")
            value = value.array
        result[name] = value
    return result


def unpickle(stream: BinaryIO, origin: str) -> dict:
    """Loads one CIFAR pickle (a dict) with the restricted, bounded unpickler."""
    unpickler = RestrictedUnpickler(stream)
    try:
        record = unpickler.load()
    except ForbiddenGlobalError as error:
        raise DatasetError(f"{origin}: {unpickler.field_hint()}{error}") from error
    # Whatever the hostile bytes make the unpickler raise is a property of the file.
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, RecursionError, struct.error) as error:
        raise DatasetError(f"{origin}: {unpickler.field_hint()}not a readable CIFAR pickle "
                           f"({type(error).__name__}: {str(error)[:200]})") from error
    if not isinstance(record, dict):
        raise DatasetError(f"{origin}: expected a pickled dict, found {type(record).__name__}")
    _check_depth(record, origin)
    return _finished_record(record, origin)


def _labels(record: dict, field: str, count: int, num_classes: int, origin: str) -> np.ndarray:
    """Integer labels only: floats, bools and byte strings are errors, not conversions."""
    values = record[field]
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu" or values.ndim != 1:
            raise DatasetError(f"{origin}: field '{field}' must hold integers, found a {values.dtype} array "
                               f"of shape {values.shape}")
        values = values.tolist()
    if not isinstance(values, list):
        raise DatasetError(f"{origin}: field '{field}' must be a list of integers, found {type(values).__name__}")
    if len(values) != count:
        raise DatasetError(f"{origin}: field '{field}' has {len(values)} entries, expected {count} like 'data'")
    wrong = next((v for v in values if type(v) is not int), None)
    if wrong is not None:
        raise DatasetError(f"{origin}: field '{field}' must hold integers, found {type(wrong).__name__} "
                           f"{_short(wrong)}")
    low, high = min(values), max(values)
    if low < 0 or high >= num_classes:
        raise DatasetError(f"{origin}: field '{field}' has values in [{_short(low)}, {_short(high)}], "
                           f"expected [0, {num_classes - 1}]")
    return np.asarray(values, dtype=np.int64)


def _validated_split(record: dict, origin: str, split: str) -> CifarSplit:
    missing = {"data", "fine_labels", "coarse_labels"} - set(record)
    if missing:
        raise DatasetError(f"{origin}: missing key(s) {sorted(missing)}; found {[_short(k) for k in sorted(record)]}")
    data = record["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{origin}: field 'data' must be uint8 of shape (N, 3072), found {described}")
    count = data.shape[0]
    if not 1 <= count <= SPLIT_SIZES[split]:
        raise DatasetError(f"{origin}: field 'data' has {count} images, expected 1 to {SPLIT_SIZES[split]:,} "
                           f"for split '{split}'")
    fine = _labels(record, "fine_labels", count, NUM_FINE_CLASSES, origin)
    coarse = _labels(record, "coarse_labels", count, NUM_COARSE_CLASSES, origin)
    mismatched = np.flatnonzero(np.asarray(COARSE_OF_FINE)[fine] != coarse)
    if len(mismatched):
        first = mismatched[0]
        raise DatasetError(
            f"{origin}: field 'coarse_labels' contradicts CIFAR-100's fine->coarse mapping at {len(mismatched)} "
            f"image(s), e.g. image {first}: fine label {fine[first]} belongs to superclass "
            f"{COARSE_OF_FINE[fine[first]]}, coarse_labels says {coarse[first]}")
    raw_names = record.get("filenames", [b""] * count)
    if not isinstance(raw_names, list) or len(raw_names) != count:
        described = f"{len(raw_names)} entries" if isinstance(raw_names, list) else type(raw_names).__name__
        raise DatasetError(f"{origin}: field 'filenames' must be a list of {count} names, found {described}")
    wrong = next((n for n in raw_names if not isinstance(n, (bytes, str))), None)
    if wrong is not None:
        raise DatasetError(f"{origin}: field 'filenames' must hold strings, found {type(wrong).__name__}")
    filenames = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in raw_names)
    # The files store each image as 1024 R, 1024 G, 1024 B values (CHW); models want HWC.
    images = data.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
    return CifarSplit(np.ascontiguousarray(images), fine, coarse, filenames)


# ---- Files: local paths or tf.io.gfile URIs ----

def is_uri(path: str) -> bool:
    """True for `scheme://...` paths (gs://, s3://, hdfs://, file://, ram://)."""
    return bool(_URI.match(path))


def _gfile():
    import tensorflow as tf  # only for URIs, on the worker that reads them

    return tf.io.gfile


def join(base: str, name: str) -> str:
    """`base/name`, keeping a URI's `scheme://` intact (never `gs:/bucket`)."""
    return f"{base.rstrip('/')}/{name}" if is_uri(base) else os.path.join(base, name)


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _exists(path: str) -> bool:
    return _gfile().exists(path) if is_uri(path) else os.path.exists(path)


def _isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_uri(path) else os.path.isdir(path)


def _open(path: str) -> BinaryIO:
    return _gfile().GFile(path, "rb") if is_uri(path) else open(path, "rb")


def _checked_member(name: str, payload: bytes, origin: str, verify_checksums: bool) -> bytes:
    if verify_checksums:
        md5 = hashlib.md5(payload).hexdigest()
        sha256 = hashlib.sha256(payload).hexdigest()
        if md5 != OFFICIAL_MEMBER_MD5[name] and sha256 != REPACKED_MEMBER_SHA256[name]:
            raise DatasetError(
                f"{origin}: checksum check failed: md5 {md5} is not the official CIFAR-100 file's "
                f"({OFFICIAL_MEMBER_MD5[name]}) and sha256 {sha256} is not the project's re-packed copy's "
                f"({REPACKED_MEMBER_SHA256[name]}); the file is corrupt or not CIFAR-100 "
                f"(data.require_official_sizes=false reads other data without this check)")
    return payload


def _read_folder_member(folder: str, name: str) -> tuple[bytes, str]:
    path = join(folder, name)
    if is_uri(path):
        gfile = _gfile()
        if not gfile.exists(path) or gfile.isdir(path):
            raise DatasetError(f"{path}: expected a file with the CIFAR-100 '{name}' pickle")
        size = gfile.stat(path).length
    else:
        if not os.path.isfile(path) or os.path.islink(path):
            raise DatasetError(f"{path}: expected a regular file with the CIFAR-100 '{name}' pickle")
        size = os.path.getsize(path)
    if size > MAX_MEMBER_BYTES[name]:
        raise DatasetError(f"{path}: {size:,} bytes, more than the {MAX_MEMBER_BYTES[name]:,} a CIFAR-100 "
                           f"'{name}' file can have")
    with _open(path) as stream:
        return stream.read(), path


class _BoundedStream:
    """The decompressed tar stream, failing past MAX_ARCHIVE_BYTES (a gzip bomb stops there)."""

    def __init__(self, stream: BinaryIO, origin: str):
        self.stream, self.origin, self.total = stream, origin, 0

    def read(self, size: int = -1) -> bytes:
        budget = MAX_ARCHIVE_BYTES + 1 - self.total
        data = self.stream.read(budget if size is None or size < 0 else min(size, budget))
        self.total += len(data)
        if self.total > MAX_ARCHIVE_BYTES:
            raise DatasetError(f"{self.origin}: decompresses to more than {MAX_ARCHIVE_BYTES:,} bytes "
                               f"(the real archive: 186 MB)")
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses oversized PAX / GNU long-name headers (tarfile reads them whole) and sparse files."""

    def _proc_member(self, archive):
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK) and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.ReadError(f"an extended header of {self.size:,} bytes "
                                    f"(at most {MAX_TAR_HEADER_BYTES:,} allowed)")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.ReadError(f"sparse member {_short(self.name)}")
        return super()._proc_member(archive)


def _read_archive_members(source: str, names: tuple[str, ...], verify_checksums: bool) -> dict[str, tuple[bytes, str]]:
    """Streams the whole archive once: reads the wanted `cifar-100-python/<name>` members
    (a `./` prefix is accepted), skips the rest, then reaches the gzip trailer so its CRC-32
    and length are checked."""
    found: dict[str, tuple[bytes, str]] = {}
    wanted = {f"{FOLDER_NAME}/{name}": name for name in names}
    try:
        with _open(source) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            stream = _BoundedStream(unzipped, source)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo, bufsize=1 << 20) as archive:
                for count, member in enumerate(archive, start=1):
                    if count > MAX_ARCHIVE_MEMBERS:
                        raise DatasetError(f"{source}: more than {MAX_ARCHIVE_MEMBERS} members "
                                           f"(the real archive has 4)")
                    path = member.name[2:] if member.name.startswith("./") else member.name
                    if path not in wanted:
                        continue
                    name, origin = wanted[path], f"{source}:{path}"
                    if name in found:
                        raise DatasetError(f"{origin}: member appears twice in the archive")
                    if not member.isfile():
                        raise DatasetError(f"{origin}: member is a link or special file, expected a regular file")
                    if member.size > MAX_MEMBER_BYTES[name]:
                        raise DatasetError(f"{origin}: member of {member.size:,} bytes, more than the "
                                           f"{MAX_MEMBER_BYTES[name]:,} a CIFAR-100 '{name}' file can have")
                    extracted = archive.extractfile(member)
                    assert extracted is not None  # regular files always have a stream
                    found[name] = (extracted.read(), origin)
            while stream.read(1 << 20):  # the rest (tar padding) up to the gzip trailer's checks
                pass
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DatasetError(f"{source}: the archive is corrupt or truncated: gzip integrity check (CRC-32 and "
                           f"length trailer) failed: {error}") from error
    except (tarfile.TarError, OSError) as error:
        raise DatasetError(f"{source}: cannot read the archive ({error})") from error
    for name in names:
        if name not in found:
            raise DatasetError(f"{source}:{FOLDER_NAME}/{name}: member not found in the archive")
    return {name: (_checked_member(name, payload, origin, verify_checksums), origin)
            for name, (payload, origin) in found.items()}


def _read_members(source: str | os.PathLike, names: tuple[str, ...],
                  verify_checksums: bool) -> dict[str, tuple[bytes, str]]:
    """{name: (bytes, origin)} of `cifar-100-python/<name>` from an archive or folder."""
    source = os.fspath(source)
    if _isdir(source):
        return {name: (_checked_member(name, *_read_folder_member(source, name), verify_checksums),
                       join(source, name)) for name in names}
    return _read_archive_members(source, names, verify_checksums)


def load_split(source: str | os.PathLike, split: str, verify_checksums: bool = False) -> CifarSplit:
    """Loads and validates the official `train` or `test` split from an archive or folder.

    verify_checksums: the file must be the official or the project's re-packed one.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, got {split!r}")
    payload, origin = _read_members(source, (split,), verify_checksums)[split]
    record = unpickle(io.BytesIO(payload), origin)
    del payload  # the arrays hold their own copy: 155 MB less at the peak for the train split
    return _validated_split(record, origin, split)


def load_label_names(source: str | os.PathLike, verify_checksums: bool = False) -> tuple[list[str], list[str]]:
    """Returns (fine_label_names, coarse_label_names) from the `meta` file."""
    payload, origin = _read_members(source, ("meta",), verify_checksums)["meta"]
    meta = unpickle(io.BytesIO(payload), origin)
    names = []
    for field, expected in (("fine_label_names", NUM_FINE_CLASSES), ("coarse_label_names", NUM_COARSE_CLASSES)):
        values = meta.get(field)
        if not isinstance(values, list) or len(values) != expected or not all(
                isinstance(v, (bytes, str)) for v in values):
            raise DatasetError(f"{origin}: field '{field}' must be a list of {expected} names")
        names.append([v.decode("latin1") if isinstance(v, bytes) else v for v in values])
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


def locate(data_dir: str | os.PathLike | None, allow_download: bool = True) -> str:
    """Finds the archive or extracted folder; downloads the archive when allowed.

    `data_dir` (a local path or a tf.io.gfile URI) falls back to the `KD_CIFAR100_DIR`
    environment variable, then to ~/.cache/kd-benchmark/cifar-100. Accepts a folder holding
    `cifar-100-python.tar.gz` or `cifar-100-python/`, or the path of either one directly.
    Downloads go to local folders only: a URI that lacks the data is an error.
    """
    base = os.fspath(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    if not is_uri(base):
        base = os.path.expanduser(base)
    if _basename(base) == ARCHIVE_NAME and _exists(base) and not _isdir(base):
        return base
    if _basename(base) == FOLDER_NAME and _isdir(base):
        return base
    for candidate in (join(base, FOLDER_NAME), join(base, ARCHIVE_NAME)):
        if _exists(candidate):
            return candidate
    if not allow_download or is_uri(base):
        raise DatasetError(
            f"CIFAR-100 not found in {base}: expected {join(base, ARCHIVE_NAME)} or {join(base, FOLDER_NAME)}/ "
            f"(set the data directory option or {DATA_DIR_ENV}"
            + ("; downloads only go to local folders)" if allow_download else ")")
        )
    return str(download(Path(base) / ARCHIVE_NAME))


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
