# The pipeline image for Kubeflow Pipelines / Vertex AI (docs/kubeflow.md): TFX 1.16 with this
# project installed, every version pinned by requirements/lock.txt as for .venv, so each
# component finds kd_trainer.run_fn.run_fn, kd_trainer.metrics and components.* by module path.
# Runtime dependencies only: the project's [project.dependencies], not its test / notebook
# extras (pytest, jupyter), which the lock file also pins. Built and pushed by skaffold
# (skaffold.yaml); `docker build .` works too.
ARG BASE_IMAGE=gcr.io/tfx-oss-public/tfx:1.16.0
FROM ${BASE_IMAGE}

# TF_ENABLE_ONEDNN_OPTS: oneDNN CPU kernels on every CPU (TensorFlow enables them itself only
# with AVX-512/AMX; docs/benchmarks.md). KD_CODE_REVISION: recorded by every Trainer (the
# image has no .git): docker build --build-arg KD_CODE_REVISION=$(git describe --always --dirty)
ARG KD_CODE_REVISION=unknown
ENV TF_USE_LEGACY_KERAS=1 \
    TF_ENABLE_ONEDNN_OPTS=1 \
    KD_CODE_REVISION=${KD_CODE_REVISION} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/kd-benchmark

# The dependencies first, at the lock file's versions: this layer is rebuilt only when the
# lock file or pyproject.toml change. (pyproject.toml alone builds an empty distribution
# whose requirements pip installs; it is removed again.)
COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml README.md ./
RUN python -m pip install --constraint requirements/lock.txt . \
    && python -m pip uninstall --yes kd-benchmark

# Then the project itself, without resolving anything again.
COPY components components
COPY kd_data kd_data
COPY kd_results kd_results
COPY kd_trainer kd_trainer
COPY pipelines pipelines
RUN python -m pip install --no-deps --constraint requirements/lock.txt . \
    && rm -rf /opt/kd-benchmark/components /opt/kd-benchmark/kd_data /opt/kd-benchmark/kd_results \
              /opt/kd-benchmark/kd_trainer /opt/kd-benchmark/pipelines build

# The import check runs outside the source folder and asserts the installed package is what loads.
WORKDIR /
RUN python -c "import kd_trainer.run_fn, kd_trainer.metrics, components.trainer, components.evaluator, \
components.leaderboard, pipelines.cli; assert '/site-packages/' in kd_trainer.__file__, kd_trainer.__file__; \
import kd_results.published; assert kd_results.published.load(), 'no published figures in the image'"

# Kubeflow may require non-root pods; CIFAR-100 downloads (data.allow_download) go to this user's ~/.cache.
RUN useradd --create-home --uid 1000 kd
USER 1000
WORKDIR /home/kd
