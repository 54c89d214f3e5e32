"""Every configuration field is validated before any component runs (issue 16, item 6), and a
Trainer's `custom_config` read back with TrainerConfig.from_dict gets the same checks."""

from __future__ import annotations

import math
import re

import pytest

from kd_trainer.config import TrainerConfig
from pipelines import presets


@pytest.mark.parametrize("overrides, message", [
    (["seed=-1"], r"seed must be an integer in \[0, 2147483547\], got -1"),
    (["data.seed=-1"], r"data.seed must be an integer in \[0, 2147483647\], got -1"),
    (["student.epochs=1000000000"], r"epochs must be an integer in \[1, 1000\], got 1000000000"),
    (["teacher.batch_size=1000000"], r"batch_size must be an integer in \[1, 50000\], got 1000000"),
    (["student.eval_batch_size=0"], r"eval_batch_size must be an integer in \[1, 50000\], got 0"),
    (["student.batch_size=30000"], r"student.batch_size \(30000\) must not exceed the training split \(25000 images"),
    (["data.train_per_class=1", "teacher.batch_size=128"],
     r"teacher.batch_size \(128\) must not exceed the training split \(100 images"),
    (["method_params.kd_svd.k=1000000"], r"method 'kd_svd': parameter 'k' must be an integer in \[1, 1024\], got 1000000"),
    (["method_params.kd_svd.k=32"], r"parameter 'k' must be at most 16 \(the fewest channels at a tap"),
    (["method_params.soft_logits.temperature=1e-300"],
     r"method 'soft_logits': parameter 'temperature' must be a finite number in \[0.01, 1000\], got 1e-300"),
    (["method_params.soft_logits.ce_weight=1e308"], r"parameter 'ce_weight' must be a finite number in \[0, 1e\+06\], got 1e\+308"),
    (["method_params.at.beta=0"], r"parameter 'beta' must be a finite number in \[1e-12, 1e\+06\], got 0"),
    (["method_params.fitnet.init_epochs=100000"], r"parameter 'init_epochs' must be an integer in \[0, 1000\]"),
    (["resources.cpu_limit=NaN"], r"cpu_limit must be a finite number in \[0, 1024\], got nan"),
    (["resources.memory_limit_gb=1e12"], r"memory_limit_gb must be a finite number in \[0, 65536\]"),
    (["student.lr_decay_at=0.9,0.2"],
     r"lr_decay_at must be increasing fractions of the epochs in \(0, 1\), e.g. 0.5,0.75; got \[0.9, 0.2\] "
     r"\(not increasing\)"),
    (["student.lr_decay_at=0.5,1.5"], r"lr_decay_at must be increasing fractions .*; got \(0.5, 1.5\)"),
    (["student.lr_decay_at=0.5,0.5"], r"got \[0.5, 0.5\] \(not increasing\)"),
    (["teacher.momentum=NaN"], r"momentum must be a finite number in \[0, 1\), got nan"),
    (["student.learning_rate=Infinity"], r"learning_rate must be a finite number in \(0, 10\], got inf"),
    (["blessing_margin=NaN"], r"blessing_margin must be a finite number in \[0, 1\), got nan"),
    (["zero_shot.num_impressions=1000000000"], r"num_impressions must be an integer in \[1, 1000000\]"),
    (["zero_shot.temperature=1e-300"], r"temperature must be a finite number in \[0.01, 1000\]"),
    (["zero_shot.betas=1,NaN"], r"betas must be a non-empty list of concentration scales in \(0, 1000\]"),
    (["trials=1000"], r"trials must be an integer in \[1, 100\], got 1000"),
])
def test_out_of_range_fields_name_the_field_and_the_range(overrides, message):
    with pytest.raises(presets.PresetError, match=message):
        presets.resolve("quick", overrides)


def test_decay_points_given_as_text_are_numbers():
    assert presets.resolve("quick", ["student.lr_decay_at=0.25,0.5,0.9"]).student.lr_decay_at == (0.25, 0.5, 0.9)


def test_cross_field_checks_do_not_depend_on_the_order_of_overrides():
    wide = ["method_params.kd_svd.k=32", "student.model=resnet8x4", "teacher.model=resnet32x4"]
    assert presets.resolve("quick", wide).method_params["kd_svd"]["k"] == 32
    assert presets.resolve("quick", ["student.batch_size=300", "data.train_per_class=3"]).student.batch_size == 300


def test_every_preset_is_within_the_bounds():
    for name in presets.PRESETS:
        preset = presets.resolve(name)
        for method in preset.methods:
            TrainerConfig.from_dict(preset.trainer_config("student", method=method).to_dict())


def _student_config(**changes) -> dict:
    config = presets.resolve("quick").trainer_config("student", method="kd_svd").to_dict()
    config.update(changes)
    return config


@pytest.mark.parametrize("changes, message", [
    ({"seed": -1}, r"seed must be an integer in \[0, 2147483647\], got -1"),
    ({"epochs": 10**9}, r"epochs must be an integer in \[1, 1000\]"),
    ({"batch_size": 10**6}, r"batch_size must be an integer in \[1, 50000\]"),
    ({"method_params": {"k": 10**6}}, r"parameter 'k' must be an integer in \[1, 1024\]"),
    ({"method_params": {"k": 64}}, r"parameter 'k' must be at most 16"),
    ({"method_params": {"weight": 1e308}}, r"parameter 'weight' must be a finite number in \[0, 1e\+06\]"),
    ({"lr_decay_at": [0.9, 0.2]}, r"got \[0.9, 0.2\] \(not increasing\)"),
    ({"lr_decay_at": 5}, r"lr_decay_at must be a list, got 5"),
    ({"learning_rate": "0.1"}, r"learning_rate must be a finite number in \(0, 10\], got '0.1'"),
    ({"momentum": math.nan}, r"momentum must be a finite number in \[0, 1\), got nan"),
    ({"trial": 0}, r"trial must be an integer in \[1, 100\], got 0"),
    ({"epochs": True}, r"epochs must be an integer in \[1, 1000\], got True"),
])
def test_trainer_config_from_dict_applies_the_same_checks(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig.from_dict(_student_config(**changes))


def test_trainer_config_from_dict_needs_model_and_epochs():
    config = _student_config()
    del config["epochs"]
    with pytest.raises(ValueError, match=re.escape("'model' and 'epochs' are required")):
        TrainerConfig.from_dict(config)
