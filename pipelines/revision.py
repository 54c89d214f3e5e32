"""What code a result comes from: the git revision (provenance) and per-component code fingerprints (cache keys).

A component's cache key holds the fingerprint of the project source files it executes, not
the git revision: a commit that touches one method's module re-runs that method's Trainers
(and what reads their models), not the teacher, the baseline or the other methods. The
revision is still recorded in every artifact, read when the component runs
(kd_trainer/provenance.py: `code_revision`, re-exported here).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Callable, Iterable

from kd_trainer.provenance import REPO_ROOT, REVISION_ENV, code_revision  # noqa: F401 (re-exported)

PROJECT_PACKAGES = ("kd_trainer", "kd_data", "kd_results", "components", "pipelines")
METHODS_PACKAGE = "kd_trainer.methods"
# Every method's hyper-parameters: in no method's fingerprint; a student's fingerprint covers its own
# method's defaults instead (pipelines/pipeline.py: trainer_code_fingerprint).
CATALOG_MODULE = "kd_trainer.methods.catalog"
# Pinned library versions: part of what every component runs.
LOCK_FILE = Path("requirements") / "lock.txt"


def _module_path(module: str, root: Path) -> Path | None:
    """The file a project module is loaded from (its __init__.py for a package); None outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module an `import` anywhere in the file may load (including `from package import submodule`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def source_files(roots: Iterable[str], skip: Callable[[str], bool] = lambda module: False,
                 root: Path = REPO_ROOT) -> list[Path]:
    """The project files that importing `roots` executes, found by walking their imports.

    Modules for which `skip(module)` is true are neither included nor walked into.
    """
    pending, seen, files = list(roots), set(), set()
    while pending:
        module = pending.pop()
        if module in seen or skip(module):
            continue
        seen.add(module)
        path = _module_path(module, root)
        if path is None:
            continue
        files.add(path)
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        pending.extend(module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1))
        pending.extend(_imported_modules(path, module))
    return sorted(files)


def fingerprint(files: Iterable[Path], root: Path = REPO_ROOT) -> str:
    """A hash of the files' paths and contents, plus the lock file of pinned library versions."""
    digest = hashlib.sha256()
    for path in sorted({*files, root / LOCK_FILE}):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _in_methods_package(module: str) -> bool:
    return module == METHODS_PACKAGE or module.startswith(METHODS_PACKAGE + ".")


def component_fingerprint(*modules: str, root: Path = REPO_ROOT) -> str:
    """The fingerprint of the code run by a component whose executor lives in `modules`.

    Distillation methods (kd_trainer.methods: the registry and every method) are left out:
    a student's Trainer adds its own method with `method_fingerprint`.
    """
    return fingerprint(source_files(modules, skip=_in_methods_package, root=root), root)


def method_fingerprint(method_module: str, *modules: str, root: Path = REPO_ROOT) -> str:
    """`component_fingerprint(*modules)` plus the method's module and what it imports.

    The registry (kd_trainer/methods/__init__.py) and the catalog of every method's parameters
    are left out, so that editing or adding one method does not re-run the others' students.
    """
    files = {*source_files(modules, skip=_in_methods_package, root=root),
             *source_files([method_module], skip=lambda module: module in (METHODS_PACKAGE, CATALOG_MODULE),
                           root=root)}
    return fingerprint(files, root)
