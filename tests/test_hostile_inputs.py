"""Hostile and corrupt CIFAR-100 inputs (issue 16, items 1-4 and 9; issue 12 item 1).

Each hostile file is built here, small on disk. Every rejection must be a DatasetError that
names the file (and the field where there is one), within BOUND_BYTES of traced memory
(Python objects and NumPy arrays, via tracemalloc) and a few seconds.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import cifar_fixtures
from kd_data import cifar100

BOUND_BYTES = 100 << 20
BOUND_SECONDS = 20  # generous for a loaded CI machine; measured times: docs/reliability.md


class _Reduce:
    """Pickles as `func(*args)` followed, when `state` is given, by BUILD(state)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _rejected(load, match: str) -> tuple[str, int, float]:
    """Runs `load` twice, expecting a DatasetError matching `match`: timed, then under
    tracemalloc (which slows Python code down); returns (message, peak bytes, seconds)."""
    started = time.perf_counter()
    with pytest.raises(cifar100.DatasetError, match=match):
        load()
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    try:
        with pytest.raises(cifar100.DatasetError, match=match) as error:
            load()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"rejected within {peak / 2**20:.1f} MiB, {elapsed:.2f} s: {str(error.value)[-90:]}")
    assert peak < BOUND_BYTES, f"peak {peak / 2**20:.0f} MiB"
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f} s"
    return str(error.value), peak, elapsed


def _archive(path: Path, members: list[tuple[str, bytes]], **tar_options) -> Path:
    """A .tar.gz with the given (name, content) members."""
    with gzip.open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w|", **tar_options) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def _split_pickle_around_big_data(images: int) -> tuple[bytes, int, bytes]:
    """(head, number of zero bytes, tail) of a valid-looking train pickle with `images` all-zero
    images: the zeros are never held in memory."""
    marker = b"\xab" * 16
    labels = list(range(100)) * (images // 100)
    record = {b"fine_labels": labels, b"coarse_labels": [cifar100.COARSE_OF_FINE[x] for x in labels],
              b"data": _Reduce(np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                               (1, (images, 3072), np.dtype("u1"), False, marker))}
    payload = cifar_fixtures.py2_pickle(record)
    head, tail = payload.split(pickle.SHORT_BINSTRING + bytes([len(marker)]) + marker)
    size = images * 3072
    return head + pickle.BINSTRING + struct.pack("<i", size), size, tail


def _folder_with(tmp_path: Path, split_payload: bytes | dict, split: str = "train") -> Path:
    return cifar_fixtures.write_folder(tmp_path, splits={split: split_payload})


# ---- 1. Corruption is detected ----

def test_archive_with_its_end_cut_off_is_refused(tmp_path, tiny_archive):
    archive = tmp_path / cifar100.ARCHIVE_NAME
    archive.write_bytes(tiny_archive.read_bytes()[:-20])
    message, _, _ = _rejected(lambda: cifar100.load_split(archive, "train"), "corrupt or truncated")
    assert str(archive) in message


def test_archive_with_a_wrong_crc_is_refused(tmp_path, tiny_archive):
    payload = bytearray(tiny_archive.read_bytes())
    payload[-8] ^= 0xFF  # the gzip trailer: CRC-32, then the length
    archive = tmp_path / cifar100.ARCHIVE_NAME
    archive.write_bytes(bytes(payload))
    _rejected(lambda: cifar100.load_split(archive, "test"), r"gzip integrity check \(CRC-32 and length trailer\) "
                                                             r"failed: CRC check failed")


@pytest.mark.parametrize("offset", [0.3, 0.5, 0.7])
def test_archive_with_flipped_bytes_is_refused(tmp_path, tiny_archive, offset):
    payload = bytearray(tiny_archive.read_bytes())
    start = int(len(payload) * offset)
    for index in range(start, start + 8):
        payload[index] ^= 0x5A
    archive = tmp_path / cifar100.ARCHIVE_NAME
    archive.write_bytes(bytes(payload))
    _rejected(lambda: [cifar100.load_split(archive, split) for split in ("train", "test")],
              f"{archive}: (the archive is corrupt or truncated|cannot read the archive)")


def test_checksums_name_the_failed_check(tiny_archive, tiny_folder):
    for source in (tiny_archive, tiny_folder):
        message, _, _ = _rejected(lambda: cifar100.load_split(source, "test", verify_checksums=True),
                                  "checksum check failed: md5 [0-9a-f]{32} is not the official CIFAR-100 file's "
                                  r"\(f0ef6b0ae62326f3e7ffdfab6717acfc\) and sha256 [0-9a-f]{64} is not the "
                                  r"project's re-packed copy's \(030f828e")
        assert "cifar-100-python" in message and "test" in message


# ---- 2. Wrong labels and ambiguous records ----

def _split_with(**changes) -> dict:
    record = cifar_fixtures.make_split(1, seed=0)
    record.update({k.encode() if isinstance(k, str) else k: v for k, v in changes.items()})
    return record


@pytest.mark.parametrize("field, values, match", [
    ("fine_labels", [-0.9] + [0] * 99, "field 'fine_labels' must hold integers, found float -0.9"),
    ("fine_labels", [99.99] * 100, "field 'fine_labels' must hold integers, found float 99.99"),
    ("coarse_labels", [True] * 100, "field 'coarse_labels' must hold integers, found bool True"),
    ("fine_labels", [b"3"] * 100, "field 'fine_labels' must hold integers, found bytes b'3'"),
    ("fine_labels", np.zeros(100, np.float32), "field 'fine_labels' must hold integers, found a float32 array"),
    ("fine_labels", [2**70] * 100, r"field 'fine_labels' has values in \[1180591620717411303424, "),
    ("coarse_labels", [0] * 100, r"field 'coarse_labels' contradicts CIFAR-100's fine->coarse mapping at \d+ "
                                 r"image\(s\), e\.g\. image \d+: fine label \d+ belongs to superclass \d+"),
    ("filenames", 5, "field 'filenames' must be a list of 100 names, found int"),
    ("filenames", [3] * 100, "field 'filenames' must hold strings, found int"),
])
def test_wrong_labels_are_refused_naming_file_and_field(tmp_path, field, values, match):
    folder = _folder_with(tmp_path, _split_with(**{field: values}))
    message, _, _ = _rejected(lambda: cifar100.load_split(folder, "train"), match)
    assert str(folder / "train") in message


def test_a_key_stored_both_as_bytes_and_as_str_is_refused(tmp_path):
    record = _split_with()
    record["data"] = record[b"data"]  # a py2 string key and a unicode key: both mean 'data'
    folder = _folder_with(tmp_path, record)
    _rejected(lambda: cifar100.load_split(folder, "train"), "key 'data' appears twice")


def test_a_duplicate_key_inside_the_pickle_is_refused(tmp_path):
    payload = cifar_fixtures.py2_pickle(_split_with())
    key = pickle.SHORT_BINSTRING + bytes([len(b"batch_label")]) + b"batch_label"
    # Appends a second SETITEM of an existing key before STOP.
    duplicated = payload[:-1] + key + pickle.SHORT_BINSTRING + b"\x01x" + pickle.SETITEM + pickle.STOP
    folder = _folder_with(tmp_path, duplicated)
    _rejected(lambda: cifar100.load_split(folder, "train"), "duplicate dict key b'batch_label'")


def test_an_array_without_data_is_refused(tmp_path):
    """NumPy's `_reconstruct` alone allocates the shape: the images would read as zeros."""
    empty = _Reduce(np.core.multiarray._reconstruct, (np.ndarray, (100, 3072), b"b"))
    folder = _folder_with(tmp_path, _split_with(data=empty))
    _rejected(lambda: cifar100.load_split(folder, "train"), "field 'data' is an array without data")


# ---- 3. Small files that would need a lot of memory ----

def _archive_with_zero_member(path: Path, name: str, size: int, before: list[tuple[str, bytes]] = (),
                              head: bytes = b"", tail: bytes = b"") -> Path:
    """A .tar.gz whose member `name` holds `head`, `size` zero bytes and `tail`, written as
    repeated gzip members (a gzip stream may be several concatenated members): a few MB on
    disk, built in a second."""
    header = io.BytesIO()
    with tarfile.open(fileobj=header, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for other, content in before:
            info = tarfile.TarInfo(other)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        info = tarfile.TarInfo(name)
        info.size = len(head) + size + len(tail)
        tar.addfile(info)  # the header only; the data follows below
        prefix = header.getvalue()[: header.tell()]
    chunk = gzip.compress(bytes(1 << 20), compresslevel=9)
    padding = -(len(head) + size + len(tail)) % tarfile.BLOCKSIZE
    with open(path, "wb") as out:
        out.write(gzip.compress(prefix + head))
        for _ in range(size >> 20):
            out.write(chunk)
        out.write(gzip.compress(bytes(size % (1 << 20)) + tail + bytes(padding + 2 * tarfile.BLOCKSIZE)))
    return path


def test_a_huge_zero_member_is_refused_before_it_is_read(tmp_path):
    archive = _archive_with_zero_member(tmp_path / cifar100.ARCHIVE_NAME, "cifar-100-python/train", 1 << 30)
    assert archive.stat().st_size < 2 << 20
    _rejected(lambda: cifar100.load_split(archive, "train"),
              r"cifar-100-python/train: member of 1,073,741,824 bytes, more than the 167,772,160")


def test_a_gzip_bomb_beside_the_members_stops_at_the_archive_bound(tmp_path, tiny_folder):
    members = [(f"cifar-100-python/{name}", (tiny_folder / name).read_bytes()) for name in ("meta", "train", "test")]
    archive = _archive_with_zero_member(tmp_path / cifar100.ARCHIVE_NAME, "cifar-100-python/padding", 1 << 30,
                                        before=members)
    assert archive.stat().st_size < 4 << 20
    _rejected(lambda: cifar100.load_split(archive, "train"), "decompresses to more than 209,715,200 bytes")


def test_a_valid_pickle_of_too_many_images_is_refused_by_its_size(tmp_path):
    head, zeros, tail = _split_pickle_around_big_data(100_000)
    archive = _archive_with_zero_member(tmp_path / cifar100.ARCHIVE_NAME, "cifar-100-python/train", zeros,
                                        head=head, tail=tail)
    assert archive.stat().st_size < 2 << 20
    _rejected(lambda: cifar100.load_split(archive, "train"), "more than the 167,772,160 a CIFAR-100 'train' file")


def test_the_big_pickle_generator_makes_a_readable_split(tmp_path):
    """The generator above writes what the reader accepts when it is not too big."""
    head, zeros, tail = _split_pickle_around_big_data(200)
    members = [(f"cifar-100-python/{name}", b"") for name in ("meta",)]
    archive = _archive_with_zero_member(tmp_path / cifar100.ARCHIVE_NAME, "cifar-100-python/train", zeros,
                                        before=members, head=head, tail=tail)
    split = cifar100.load_split(archive, "train")
    assert len(split) == 200 and not split.images.any() and split.fine_labels[101] == 1


def test_an_oversized_file_in_a_folder_is_refused_before_it_is_read(tmp_path):
    folder = _folder_with(tmp_path, b"")
    with open(folder / "test", "wb") as sparse:
        sparse.truncate(1 << 30)  # sparse: nothing written to disk
    _rejected(lambda: cifar100.load_split(folder, "test"), r"test: 1,073,741,824 bytes, more than the 35,651,584")


def test_shared_nested_lists_are_refused(tmp_path):
    nested: list = [0]
    for _ in range(30):
        nested = [nested, nested]  # 2**30 leaves when expanded, a few hundred bytes pickled
    payload = cifar_fixtures.py2_pickle({b"fine_labels": nested})
    assert len(payload) < 4_000
    folder = _folder_with(tmp_path, payload)
    _rejected(lambda: cifar100.load_split(folder, "train"), "second reference to a list or dict")


def test_deeply_nested_lists_are_refused(tmp_path):
    nested: list = [0]
    for _ in range(200):
        nested = [nested]
    folder = _folder_with(tmp_path, cifar_fixtures.py2_pickle({b"fine_labels": nested}))
    _rejected(lambda: cifar100.load_split(folder, "train"), "containers nested deeper than 4 levels")


def test_too_many_elements_are_refused(tmp_path):
    many_zeros = pickle.MARK + (pickle.BININT1 + b"\x00") * 500_000 + pickle.APPENDS  # 1 MB
    payload = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.SHORT_BINSTRING + b"\x0bfine_labels"
               + pickle.EMPTY_LIST + many_zeros + pickle.SETITEM + pickle.STOP)
    folder = _folder_with(tmp_path, payload)
    _rejected(lambda: cifar100.load_split(folder, "train"), "more than 300,000 pickle opcodes")


def test_an_archive_with_many_members_is_refused_at_the_member_bound(tmp_path):
    archive = _archive(tmp_path / cifar100.ARCHIVE_NAME, [(f"junk/{i}", b"") for i in range(1000)])
    _rejected(lambda: cifar100.load_split(archive, "train"), "more than 64 members")


def test_an_oversized_extended_header_is_refused(tmp_path):
    archive = _archive(tmp_path / cifar100.ARCHIVE_NAME, [("cifar-100-python/train", b"x")],
                       format=tarfile.PAX_FORMAT, pax_headers={"comment": "x" * (1 << 20)})
    _rejected(lambda: cifar100.load_split(archive, "train"), "extended header of 1,048,5")


# ---- 4. What NumPy or the conversions would raise becomes a DatasetError ----

def test_garbage_dtype_state_is_refused(tmp_path):
    dtype = _Reduce(np.dtype, ("u1", False, True), (3, "|", None, None, None, 2**70, -1, 0))
    data = _Reduce(np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (100, 3072), dtype, False, b""))
    folder = _folder_with(tmp_path, _split_with(data=data))
    _rejected(lambda: cifar100.load_split(folder, "train"),
              r"field 'data': not a readable CIFAR pickle \(UnpicklingError: invalid dtype state")


def test_a_huge_array_shape_is_refused(tmp_path):
    data = _Reduce(np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                   (1, (2**31, 2**31), np.dtype("u1"), False, b"\x00" * 3072))
    folder = _folder_with(tmp_path, _split_with(data=data))
    _rejected(lambda: cifar100.load_split(folder, "train"),
              "field 'data': not a readable CIFAR pickle .*needs 4611686018427387904 bytes, the file holds 3072")


def test_an_empty_split_is_refused_with_the_size_check_off(tmp_path):
    record = _split_with(data=np.zeros((0, 3072), np.uint8), fine_labels=[], coarse_labels=[], filenames=[])
    folder = _folder_with(tmp_path, record)
    _rejected(lambda: cifar100.load_split(folder, "train"), "field 'data' has 0 images, expected 1 to 50,000")


# ---- 9. Legitimate re-packs ----

def test_members_with_a_dot_slash_prefix_are_accepted(tmp_path, tiny_folder):
    members = [(f"./cifar-100-python/{name}", (tiny_folder / name).read_bytes()) for name in ("meta", "train", "test")]
    archive = _archive(tmp_path / cifar100.ARCHIVE_NAME, members)
    assert len(cifar100.load_split(archive, "train")) == 300
    assert len(cifar100.load_label_names(archive)[0]) == 100


# ---- Issue 12: data_dir as a tf.io.gfile URI ----

def test_uris_keep_their_scheme():
    assert cifar100.join("gs://bucket/cifar", cifar100.ARCHIVE_NAME) == "gs://bucket/cifar/cifar-100-python.tar.gz"
    assert cifar100.join("gs://bucket/cifar/", cifar100.FOLDER_NAME) == "gs://bucket/cifar/cifar-100-python"
    assert cifar100.is_uri("s3://b/x") and cifar100.is_uri("hdfs://nn/x") and not cifar100.is_uri("/data/x")


def test_archive_and_folder_are_read_through_a_gfile_uri(tiny_archive, tiny_folder):
    import tensorflow as tf

    from components import cifar_example_gen

    base = "ram://kd-tests/cifar"
    tf.io.gfile.makedirs(f"{base}/{cifar100.FOLDER_NAME}")
    tf.io.gfile.copy(str(tiny_archive), f"{base}/{cifar100.ARCHIVE_NAME}", overwrite=True)
    for name in ("meta", "train", "test"):
        tf.io.gfile.copy(str(tiny_folder / name), f"{base}/{cifar100.FOLDER_NAME}/{name}", overwrite=True)
    assert cifar100.locate(base, allow_download=False) == f"{base}/{cifar100.FOLDER_NAME}"
    assert cifar100.locate(f"{base}/{cifar100.ARCHIVE_NAME}", allow_download=False) == f"{base}/{cifar100.ARCHIVE_NAME}"
    assert len(cifar100.load_split(f"{base}/{cifar100.ARCHIVE_NAME}", "train")) == 400
    assert len(cifar100.load_split(f"{base}/{cifar100.FOLDER_NAME}", "test")) == 100
    examples = list(cifar_example_gen.read_split("test", f"{base}/{cifar100.ARCHIVE_NAME}", 1, 0, False))
    assert len(examples) == 100
    with pytest.raises(cifar100.DatasetError, match="CIFAR-100 not found in ram://kd-tests/missing: expected "
                                                    "ram://kd-tests/missing/cifar-100-python.tar.gz"):
        cifar100.locate("ram://kd-tests/missing", allow_download=True)
