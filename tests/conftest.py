"""Shared fixtures. TF_USE_LEGACY_KERAS must be set before anything imports TensorFlow."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import cifar_fixtures  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "cifar-100-python.tar.gz"


@pytest.fixture(scope="session")
def real_archive() -> Path:
    if not REAL_ARCHIVE.is_file():
        pytest.fail(f"the real CIFAR-100 archive is expected at {REAL_ARCHIVE} (../shared/data beside the repo)")
    return REAL_ARCHIVE


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    """A .tar.gz in the official layout: 4 train / 2 test images per fine class."""
    return cifar_fixtures.write_archive(tmp_path_factory.mktemp("archive"), train_per_class=4, test_per_class=2)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """An extracted cifar-100-python/ folder: 3 train / 1 test images per fine class."""
    return cifar_fixtures.write_folder(tmp_path_factory.mktemp("folder"), train_per_class=3, test_per_class=1)
