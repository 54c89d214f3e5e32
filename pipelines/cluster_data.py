"""CIFAR-100 for pods: copy the archive to object storage, and check that a compiled
pipeline's `data.data_dir` is storage every pod can read.

A pod of a Kubeflow / Vertex AI run has none of this machine's files and often no internet
access, so the ExampleGen must read the archive from a `tf.io.gfile` URI (gs://, s3://,
hdfs://, ...). `kd data upload DEST_URI` puts it there and verifies the copy by reading
it back through the same filesystem layer the ExampleGen uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tarfile
from pathlib import Path

import tensorflow as tf

from kd_data.cifar100 import ARCHIVE_NAME, DATA_DIR_ENV, DEFAULT_DATA_DIR, FOLDER_NAME

REQUIRED_MEMBERS = tuple(f"{FOLDER_NAME}/{name}" for name in ("meta", "train", "test"))
CHUNK_BYTES = 8 << 20
LOCAL_SCHEMES = ("", "file")


class UploadError(RuntimeError):
    """The archive could not be found, is not CIFAR-100, or its copy does not match."""


@dataclasses.dataclass(frozen=True)
class Upload:
    source: Path
    destination: str  # the archive's URI
    data_dir: str  # what to set as data.data_dir
    sha256: str
    size: int


def uri_scheme(uri: str) -> str:
    """`gs` for gs://bucket/x, `` for a plain path."""
    return uri.split("://", 1)[0] if "://" in uri else ""


def is_local(uri: str) -> bool:
    """Whether `uri` names this machine's filesystem, which pods do not share."""
    return uri_scheme(uri) in LOCAL_SCHEMES


def default_archive() -> Path:
    """The archive `kd run` would read: in $KD_CIFAR100_DIR, else in the download cache."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser() / ARCHIVE_NAME


def sha256_of(uri: str) -> tuple[str, int]:
    """sha256 and size of a file read through tf.io.gfile (any registered scheme)."""
    digest, size = hashlib.sha256(), 0
    with tf.io.gfile.GFile(uri, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_archive(source: Path) -> None:
    if not source.is_file():
        raise UploadError(f"no CIFAR-100 archive at {source}: give --archive PATH/{ARCHIVE_NAME} "
                          f"(or set ${DATA_DIR_ENV} to its folder)")
    try:
        with tarfile.open(source, "r:gz") as archive:
            names = set(archive.getnames())
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UploadError(f"{source} is not a readable .tar.gz archive ({error})") from error
    missing = [name for name in REQUIRED_MEMBERS if name not in names]
    if missing:
        raise UploadError(f"{source} is not the CIFAR-100 python archive: members {missing} are missing")


def upload_archive(source: str | os.PathLike, destination_dir: str) -> Upload:
    """Copies the archive to `destination_dir`/cifar-100-python.tar.gz and verifies its sha256 there.

    Overwrites an existing copy. A copy whose checksum differs is deleted and raises.
    """
    source = Path(source).expanduser()
    _check_archive(source)
    data_dir = destination_dir.rstrip("/")
    if not destination_dir.partition("://")[2 if "://" in destination_dir else 0].strip("/"):
        raise UploadError(f"DEST_URI {destination_dir!r} needs a bucket and folder, e.g. gs://BUCKET/cifar-100")
    destination = f"{data_dir}/{ARCHIVE_NAME}"
    expected, size = sha256_of(str(source))
    tf.io.gfile.makedirs(data_dir)
    tf.io.gfile.copy(str(source), destination, overwrite=True)
    copied, copied_size = sha256_of(destination)
    if (copied, copied_size) != (expected, size):
        tf.io.gfile.remove(destination)
        raise UploadError(f"the copy at {destination} has sha256 {copied} ({copied_size} bytes), expected {expected} "
                          f"({size} bytes) like {source}; it was deleted, run the upload again")
    return Upload(source=source, destination=destination, data_dir=data_dir, sha256=expected, size=size)


def cluster_data_problem(data_dir: str, allow_download: bool, downloads_allowed_by_option: bool) -> str | None:
    """Why pods could not read CIFAR-100 from `data_dir`, or None when they can.

    An empty data_dir means a download inside the ExampleGen pod, accepted only when both the
    preset (data.allow_download) and the compile option allow it.
    """
    upload = "upload the archive with `kd data upload gs://BUCKET/cifar-100` and compile with " \
             "--set data.data_dir=gs://BUCKET/cifar-100"
    if not data_dir:
        if allow_download and downloads_allowed_by_option:
            return None
        return (f"data.data_dir is empty, so the ExampleGen pod would download CIFAR-100 from the internet; "
                f"{upload} (or, when the pods have internet access, pass --allow-download with "
                f"data.allow_download=true)")
    if is_local(data_dir):
        return (f"data.data_dir={data_dir!r} is a path on this machine, which pods cannot read; {upload} "
                f"(any tf.io.gfile URI works: gs://, s3://, hdfs://)")
    return None
