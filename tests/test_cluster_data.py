"""`kd data upload`: the CIFAR-100 archive copied to a tf.io.gfile URI and verified there.

`ram://` is TensorFlow's in-memory filesystem: a non-local URI scheme that goes through the
same tf.io.gfile layer as gs:// or s3://, with no network.
"""

import hashlib
import tarfile
import uuid

import pytest
import tensorflow as tf

from pipelines import cli, cluster_data


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_ram_dir() -> str:
    return f"ram://kd-test-{uuid.uuid4().hex}/cifar-100"


def test_upload_to_a_non_local_scheme_is_verified_by_reading_it_back(tiny_archive):
    destination = fresh_ram_dir()
    upload = cluster_data.upload_archive(tiny_archive, destination + "/")
    assert upload.data_dir == destination and upload.destination == f"{destination}/cifar-100-python.tar.gz"
    assert (upload.sha256, upload.size) == (sha256(tiny_archive), tiny_archive.stat().st_size)
    with tf.io.gfile.GFile(upload.destination, "rb") as copied:
        assert copied.read() == tiny_archive.read_bytes()
    assert not cluster_data.is_local(upload.data_dir) and cluster_data.uri_scheme(upload.data_dir) == "ram"


def test_kd_data_upload_prints_what_to_compile_with(tiny_archive, tmp_path, capsys):
    destination = f"file://{tmp_path}/bucket/cifar"
    assert cli.main(["data", "upload", destination, "--archive", str(tiny_archive)]) == 0
    printed = capsys.readouterr().out
    assert f"--set data.data_dir={destination}" in printed and sha256(tiny_archive) in printed
    assert sha256(tmp_path / "bucket" / "cifar" / "cifar-100-python.tar.gz") == sha256(tiny_archive)


def test_default_archive_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_CIFAR100_DIR", str(tmp_path))
    assert cluster_data.default_archive() == tmp_path / "cifar-100-python.tar.gz"


def test_a_copy_that_differs_is_deleted_and_reported(tiny_archive, monkeypatch):
    def truncating_copy(source, destination, overwrite=False):
        with tf.io.gfile.GFile(destination, "wb") as target:
            target.write(tiny_archive.read_bytes()[:-100])

    monkeypatch.setattr(tf.io.gfile, "copy", truncating_copy)
    destination = fresh_ram_dir()
    with pytest.raises(cluster_data.UploadError, match=rf"copy at {destination}/cifar-100-python.tar.gz has sha256 "
                                                        rf"\w+ \(\d+ bytes\), expected {sha256(tiny_archive)}"):
        cluster_data.upload_archive(tiny_archive, destination)
    assert not tf.io.gfile.exists(f"{destination}/cifar-100-python.tar.gz")


def test_only_a_cifar_archive_is_uploaded(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "cifar-100-python.tar.gz"
    assert cli.main(["data", "upload", fresh_ram_dir(), "--archive", str(missing)]) == 1
    assert "no CIFAR-100 archive at" in capsys.readouterr().err
    not_gzip = tmp_path / "plain.tar.gz"
    not_gzip.write_bytes(b"not an archive")
    with pytest.raises(cluster_data.UploadError, match="not a readable .tar.gz archive"):
        cluster_data.upload_archive(not_gzip, fresh_ram_dir())
    other = tmp_path / "other.tar.gz"
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"x")
    with tarfile.open(other, "w:gz") as archive:
        archive.add(tmp_path / "cifar-100-python", arcname="cifar-100-python")
    with pytest.raises(cluster_data.UploadError, match=r"members \['cifar-100-python/train', 'cifar-100-python/test'\]"):
        cluster_data.upload_archive(other, fresh_ram_dir())


def test_destination_needs_a_folder(tiny_archive):
    with pytest.raises(cluster_data.UploadError, match="needs a bucket and folder"):
        cluster_data.upload_archive(tiny_archive, "gs://")
