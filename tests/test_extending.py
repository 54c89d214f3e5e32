"""Adding a method touches its own module, one catalog entry, its tests and its docs row
(README, "Adding a method, a network, a preset or a component"): a method written in a module
of its own and registered by one `MethodEntry` runs through the configuration checks, a
preset, the pipeline and a training step with no other file changed."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import numpy as np
import pytest

from kd_trainer import methods
from kd_trainer.methods.catalog import MethodEntry
from pipelines import presets

METHOD_MODULE = "kd_extension_example"
METHOD_SOURCE = '''
"""Logit matching: CE + weight * mean squared difference of student and teacher logits."""
import dataclasses

import tensorflow as tf

from kd_trainer import fields
from kd_trainer.methods.base import DistillationMethod


@dataclasses.dataclass(frozen=True)
class LogitMatchingParams:
    weight: float = fields.number(1.0, 0, 1e6)


class LogitMatching(DistillationMethod):
    name = "logit_matching"
    student_taps = ("logits",)
    teacher_taps = ("logits",)
    loss_term_names = ("ce", "logits")
    Params = LogitMatchingParams

    def loss_terms(self, labels, cross_entropy, student, teacher, stage="main"):
        squared = tf.reduce_mean(tf.square(student["logits"] - teacher["logits"]))
        return {"ce": cross_entropy, "logits": self.params.weight * squared}
'''


@pytest.fixture
def new_method(tmp_path, monkeypatch) -> str:
    (tmp_path / f"{METHOD_MODULE}.py").write_text(textwrap.dedent(METHOD_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, METHOD_MODULE, raising=False)
    params = __import__(METHOD_MODULE).LogitMatchingParams
    entry = MethodEntry("logit_matching", f"{METHOD_MODULE}:LogitMatching", params)
    monkeypatch.setitem(methods.CATALOG, entry.name, entry)
    return entry.name


def test_a_new_method_is_configured_checked_and_put_in_the_pipeline(new_method, tmp_path):
    preset = presets.resolve("smoke", [f'methods=["{new_method}"]', f"method_params.{new_method}.weight=2"])
    assert preset.trainer_config("student", method=new_method).method_params == {"weight": 2.0}
    with pytest.raises(presets.PresetError, match=f"method '{new_method}': parameter 'weight' must be a finite "
                                                  r"number in \[0, 1e\+06\], got -1"):
        presets.resolve("smoke", [f'methods=["{new_method}"]', f"method_params.{new_method}.weight=-1"])

    from pipelines.pipeline import create_pipeline

    pipeline = create_pipeline("kd-extension", str(tmp_path / "root"), preset)
    ids = {component.id for component in pipeline.components}
    assert {f"Trainer.{new_method}_trial1", f"Evaluator.{new_method}_trial1"} <= ids
    trainer = next(c for c in pipeline.components if c.id == f"Trainer.{new_method}_trial1")
    config = json.loads(trainer.exec_properties["custom_config"])
    assert (config["method"], config["method_params"], config["role"]) == (new_method, {"weight": 2.0}, "student")


def test_a_new_method_trains_as_every_catalog_method_does(new_method):
    import method_harness

    harness = method_harness.build_distiller(new_method, {"weight": 2.0})
    teacher_before = method_harness.snapshot(harness.teacher.variables)
    student_before = method_harness.snapshot(harness.student.trainable_variables)
    logs = harness.distiller.train_on_batch(*method_harness.batch_for(harness.method), return_dict=True)
    assert np.isfinite(logs["logits"]) and logs["logits"] > 0
    assert not any(method_harness.moved(teacher_before, harness.teacher.variables))
    assert all(method_harness.moved(student_before, harness.student.trainable_variables))


def test_every_catalog_method_has_a_row_in_the_method_table():
    with open(presets.__file__.replace("pipelines/presets.py", "docs/methods.md")) as f:
        documented = set(re.findall(r"^\| [^|]*\(`([a-z_0-9]+)`\)", f.read(), flags=re.MULTILINE))
    assert set(methods.CATALOG) <= documented, sorted(set(methods.CATALOG) - documented)
