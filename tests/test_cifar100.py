import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

import cifar_fixtures
from kd_data import cifar100


def _original(folder_or_archive, split):
    """The raw dict as the fixture wrote it (read back without our loader)."""
    if folder_or_archive.is_dir():
        payload = (folder_or_archive / split).read_bytes()
    else:
        with tarfile.open(folder_or_archive) as tar:
            payload = tar.extractfile(f"cifar-100-python/{split}").read()
    return pickle.loads(payload, encoding="bytes")


@pytest.mark.parametrize("source_fixture, per_class", [("tiny_archive", (4, 2)), ("tiny_folder", (3, 1))])
def test_loads_both_layouts_with_counts_labels_and_pixels(request, source_fixture, per_class):
    source = request.getfixturevalue(source_fixture)
    for split, count in zip(("train", "test"), per_class):
        loaded = cifar100.load_split(source, split)
        original = _original(source, split)
        assert len(loaded) == 100 * count
        assert loaded.images.shape == (100 * count, 32, 32, 3) and loaded.images.dtype == np.uint8
        np.testing.assert_array_equal(loaded.fine_labels, original[b"fine_labels"])
        np.testing.assert_array_equal(loaded.coarse_labels, original[b"coarse_labels"])
        # The files store 1024 R, then G, then B values per image, row-major.
        data = original[b"data"]
        for index in (0, len(loaded) - 1):
            for channel in range(3):
                for row, col in ((0, 0), (5, 17), (31, 31)):
                    assert loaded.images[index, row, col, channel] == data[index, channel * 1024 + row * 32 + col]
        assert loaded.filenames[0] == original[b"filenames"][0].decode()


def test_label_names(tiny_archive):
    fine, coarse = cifar100.load_label_names(tiny_archive)
    assert len(fine) == 100 and len(coarse) == 20 and fine[3] == "fine_3"


def test_locate_accepts_folder_archive_and_parent(tmp_path, tiny_archive, tiny_folder, monkeypatch):
    monkeypatch.delenv(cifar100.DATA_DIR_ENV, raising=False)
    assert cifar100.locate(tiny_archive.parent, allow_download=False) == str(tiny_archive)
    assert cifar100.locate(tiny_archive, allow_download=False) == str(tiny_archive)
    assert cifar100.locate(tiny_folder, allow_download=False) == str(tiny_folder)
    monkeypatch.setenv(cifar100.DATA_DIR_ENV, str(tiny_folder.parent))
    assert cifar100.locate(None, allow_download=False) == str(tiny_folder)


def test_missing_dataset_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(cifar100.DatasetError, match=f"expected {tmp_path}/cifar-100-python.tar.gz"):
        cifar100.locate(tmp_path, allow_download=False)


def test_offline_download_fails_with_instructions_and_leaves_nothing(tmp_path):
    # Port 9 on localhost refuses connections: the same failure as having no network.
    with pytest.raises(cifar100.DatasetError, match="Without network access, copy cifar-100-python.tar.gz"):
        cifar100.download(tmp_path / cifar100.ARCHIVE_NAME, url="http://127.0.0.1:9/cifar.tar.gz", timeout_s=5)
    assert os.listdir(tmp_path) == []


def test_download_verifies_md5_before_moving_into_place(tmp_path, tiny_archive):
    url = tiny_archive.as_uri()
    good_md5 = hashlib.md5(tiny_archive.read_bytes()).hexdigest()
    target = tmp_path / "good" / cifar100.ARCHIVE_NAME
    assert cifar100.download(target, url=url, md5=good_md5) == target
    assert target.read_bytes() == tiny_archive.read_bytes()
    bad_target = tmp_path / "bad" / cifar100.ARCHIVE_NAME
    with pytest.raises(cifar100.DatasetError, match="has md5 .* expected 0{32}; not used"):
        cifar100.download(bad_target, url=url, md5="0" * 32)
    assert os.listdir(bad_target.parent) == []


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kd-pwned",))


def test_restricted_unpickler_refuses_code_execution(tmp_path):
    payload = pickle.dumps({"data": _Exploit()}, protocol=2)
    with pytest.raises(cifar100.DatasetError, match="refusing to load global 'posix.system'"):
        cifar100.unpickle(io.BytesIO(payload), "evil.pkl")
    assert not os.path.exists("/tmp/kd-pwned")


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop(b"fine_labels"), r"missing key\(s\) \['fine_labels'\]"),
    (lambda r: r.__setitem__(b"data", r[b"data"][:, :100]), r"'data' must be uint8 of shape \(N, 3072\)"),
    (lambda r: r.__setitem__(b"data", r[b"data"].astype(np.float32)), r"'data' must be uint8"),
    (lambda r: r[b"fine_labels"].__setitem__(0, 100), r"'fine_labels' has values in \[0, 100\], expected \[0, 99\]"),
    (lambda r: r[b"coarse_labels"].__setitem__(0, -1), r"'coarse_labels' has values in \[-1, "),
    (lambda r: r[b"coarse_labels"].pop(), r"'coarse_labels' has 299 entries, expected 300"),
])
def test_invalid_contents_name_file_and_field(tmp_path, mutate, message):
    record = cifar_fixtures.make_split(3, seed=0)
    mutate(record)
    folder = cifar_fixtures.write_folder(tmp_path, splits={"train": record})
    with pytest.raises(cifar100.DatasetError, match=message) as error:
        cifar100.load_split(folder, "train")
    assert str(folder / "train") in str(error.value)


def test_truncated_pickle_is_reported(tmp_path):
    payload = cifar_fixtures.py2_pickle(cifar_fixtures.make_split(1, seed=0))
    folder = cifar_fixtures.write_folder(tmp_path, splits={"test": payload[: len(payload) // 2]})
    with pytest.raises(cifar100.DatasetError, match="not a readable CIFAR pickle"):
        cifar100.load_split(folder, "test")


def test_archive_links_are_refused(tmp_path):
    archive = tmp_path / cifar100.ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("cifar-100-python/train")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(cifar100.DatasetError, match="link or special file"):
        cifar100.load_split(archive, "train")


def test_official_size_check(tiny_folder):
    split = cifar100.load_split(tiny_folder, "train")
    with pytest.raises(cifar100.DatasetError, match="has 300 images, expected 50000"):
        cifar100.check_official_sizes(split, "train", "tiny")


def test_stratified_subsample_is_balanced_deterministic_and_nested():
    labels = np.repeat(np.arange(100), 5)
    np.random.default_rng(0).shuffle(labels)
    two = cifar100.stratified_subsample(labels, 2, seed=7)
    assert np.array_equal(two, cifar100.stratified_subsample(labels, 2, seed=7))
    assert not np.array_equal(two, cifar100.stratified_subsample(labels, 2, seed=8))
    assert np.bincount(labels[two], minlength=100).tolist() == [2] * 100
    assert set(two) <= set(cifar100.stratified_subsample(labels, 4, seed=7))
    assert len(cifar100.stratified_subsample(labels, None, seed=7)) == 500
    with pytest.raises(cifar100.DatasetError, match="fewer than the 6 asked for"):
        cifar100.stratified_subsample(labels, 6, seed=7)


def test_real_archive_is_official_cifar100(real_archive):
    """The project's re-packed copy passes every check, checksums included; its labels give
    the fine->coarse mapping the reader enforces."""
    for split, per_class in (("train", 500), ("test", 100)):
        loaded = cifar100.load_split(real_archive, split, verify_checksums=True)
        cifar100.check_official_sizes(loaded, split, str(real_archive))
        assert np.bincount(loaded.coarse_labels).tolist() == [5 * per_class] * 20
        mapping = {(int(f), int(c)) for f, c in zip(loaded.fine_labels, loaded.coarse_labels)}
        assert sorted(mapping) == list(enumerate(cifar100.COARSE_OF_FINE))
    fine, coarse = cifar100.load_label_names(real_archive, verify_checksums=True)
    assert fine[:3] == ["apple", "aquarium_fish", "baby"]
    assert tuple(coarse) == cifar100.COARSE_LABEL_NAMES


def test_traversal_members_are_never_read_or_written(tmp_path, tiny_archive):
    """Only the exact `cifar-100-python/<split>` members are read, in memory: a hostile
    `../` member beside them lands nowhere."""
    archive = tmp_path / "hostile" / cifar100.ARCHIVE_NAME
    archive.parent.mkdir()
    with tarfile.open(tiny_archive, "r:gz") as source, tarfile.open(archive, "w:gz") as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        evil = tarfile.TarInfo("cifar-100-python/../../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    split = cifar100.load_split(archive, "train")
    assert len(split) == 400
    assert not list(tmp_path.rglob("escaped.txt"))


def test_truncated_archive_is_reported(tmp_path, tiny_archive):
    archive = tmp_path / cifar100.ARCHIVE_NAME
    archive.write_bytes(tiny_archive.read_bytes()[: tiny_archive.stat().st_size // 2])
    with pytest.raises(cifar100.DatasetError, match=f"{archive}: the archive is corrupt or truncated"):
        cifar100.load_split(archive, "test")
