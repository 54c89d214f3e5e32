"""The contract every catalog method keeps, checked for each one by the same test rather than
by lists written when methods arrived: it builds on a small pair, one training step of each
of its stages keeps the teacher frozen, trains what its terms reach and nothing else, with
finite terms and gradients; and each parameter refuses a value outside its declared rule,
naming the method and the parameter. (Each formula is checked against NumPy elsewhere.)"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from kd_trainer import fields, methods
from kd_trainer.methods.base import INIT_STAGE, MAIN_STAGE
from method_harness import batch_for, build_distiller, moved, snapshot, start_stage

MAIN_EPOCHS = 10
BATCH = 4


@pytest.mark.parametrize("name", methods.CATALOG)
def test_every_stage_keeps_the_contract(name):
    """One step of each stage, in order, as run_fn trains them (a fresh optimizer per stage):
    the teacher (BN statistics included) never changes; a teacher stage leaves the student alone;
    otherwise exactly the variables the stage's terms reach move (at least the classifier in the
    main stage, never while initialising), with finite terms and gradients; a partner trains too;
    and every connector trains in some stage."""
    harness = build_distiller(name, main_epochs=MAIN_EPOCHS, compile=False)
    distiller, method, student, teacher = harness.distiller, harness.method, harness.student, harness.teacher
    student_ids = {id(v) for v in student.variables}
    applied = []  # what the method's task_gradients hook gave the optimizer
    hook = method.task_gradients

    def recording(gradient, terms, step):
        applied.append(hook(gradient, terms, step))
        return applied[-1]

    method.task_gradients = recording
    connectors_trained = set()
    first_epoch = 0
    for index, (stage, epochs) in enumerate(method.stage_epochs(MAIN_EPOCHS).items()):
        start_stage(harness, stage, first_epoch)
        applied.clear()
        trained = distiller.trainable_student_variables()
        teacher_before = snapshot(teacher.variables) if teacher is not None else []
        student_before, trained_before = snapshot(student.variables), snapshot(trained)
        partner = harness.partner_network
        partner_before = snapshot(partner.trainable_variables) if partner is not None else []

        logs = distiller.train_step(batch_for(method, BATCH, seed=index))

        assert {"loss", *method.loss_term_names} <= set(logs)
        assert all(np.isfinite(float(value)) for value in logs.values()), (stage, logs)
        assert int(distiller.non_finite_step.numpy()) == -1, stage
        if teacher is not None:
            assert not any(moved(teacher_before, teacher.variables)), f"{stage}: the frozen teacher changed"
        connectors_trained |= {id(v) for v, changed in zip(trained, moved(trained_before, trained))
                               if changed and id(v) not in student_ids}
        first_epoch += epochs
        if stage in method.teacher_stages:
            # Only the method's modules train, on the teacher's taps: the student neither runs nor changes.
            assert not applied, stage
            assert not any(moved(student_before, student.variables)), f"{stage}: the student changed"
            assert connectors_trained, f"{stage}: nothing trained"
            continue
        (gradients,) = applied
        assert len(gradients) == len(trained)
        assert all(np.all(np.isfinite(g.numpy())) for g in gradients if g is not None), f"{stage}: non-finite gradient"
        for variable, gradient, changed in zip(trained, gradients, moved(trained_before, trained)):
            if gradient is None:
                assert not changed, f"{stage}: {variable.name} moved without a gradient"
            elif np.any(gradient.numpy() != 0):
                assert changed, f"{stage}: {variable.name} has a gradient but did not move"
        reached = {id(v) for v, g in zip(trained, gradients) if g is not None}
        classifier = [id(v) in reached for v in student.get_layer("logits").trainable_variables]
        if stage == MAIN_STAGE:
            assert all(classifier), "the main stage does not train the classifier"
        if stage == INIT_STAGE:
            assert not any(classifier), "an initialisation stage trains the classifier"
        assert any(id(v) in reached for v in student.trainable_variables), f"{stage}: the student does not train"
        if partner is not None:
            assert all(moved(partner_before, partner.trainable_variables)), f"{stage}: the partner did not train"
    untrained = [v.name for v in method.trainable_variables if id(v) not in connectors_trained]
    assert not untrained, f"connectors no stage trains: {untrained}"


# --------------------------------------------------------------------------- parameters

def _outside(rule: fields.Range) -> list[float]:
    """Values just outside a range, at each end (an open end itself)."""
    if rule.kind is int:
        return [int(rule.low) - 1, int(rule.high) + 1]
    return [rule.low if rule.low_open else math.nextafter(rule.low, -math.inf),
            rule.high if rule.high_open else math.nextafter(rule.high, math.inf)]


def _params_fields():
    for name, entry in methods.CATALOG.items():
        for field in dataclasses.fields(entry.params):
            yield name, field


RANGES = [(name, field.name, value) for name, field in _params_fields()
          if isinstance(fields.rule_of(field), fields.Range) for value in _outside(fields.rule_of(field))]
CHOICES = [(name, field.name) for name, field in _params_fields()
           if isinstance(fields.rule_of(field), (fields.Choices, fields.Names))]


def _refused(name: str, values: dict, parameter: str) -> None:
    """Refused by the TensorFlow-free check (presets, --set) and by the method itself, naming both."""
    for check in (methods.catalog.check_params, methods.create):
        with pytest.raises(ValueError, match=rf"^method '{name}': parameter '{parameter}'[: ]"):
            check(name, values)


@pytest.mark.parametrize("name, parameter, value", RANGES)
def test_a_value_just_outside_a_parameters_range_is_refused(name, parameter, value):
    _refused(name, {parameter: value}, parameter)


@pytest.mark.parametrize("name, parameter", CHOICES)
def test_an_unknown_choice_is_refused(name, parameter):
    _refused(name, {parameter: "bogus"}, parameter)


@pytest.mark.parametrize("name", methods.CATALOG)
def test_every_parameter_refuses_a_value_of_another_type(name):
    for field in dataclasses.fields(methods.CATALOG[name].params):
        _refused(name, {field.name: [1]}, field.name)


def test_the_parametrizations_cover_the_catalog():
    """Every field has a rule (tests/test_fields.py); these lists hold the numeric and named ones."""
    assert len(RANGES) > 2 * len(methods.CATALOG) and CHOICES
