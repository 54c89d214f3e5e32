import pytest

from kd_trainer import methods

from pipelines import presets


def test_every_preset_runs_every_seed_method():
    for name in ("smoke", "quick", "seed"):
        assert set(presets.resolve(name).methods) == set(presets.SEED_METHODS)
    assert set(methods.CATALOG) == {*presets.SEED_METHODS, *presets.ZERO_SHOT_METHODS, *presets.MODERN_METHODS,
                                    *presets.SEED_AUTHOR_LATER_METHODS, "crd", "vid", "ft", "reviewkd"}
    assert presets.resolve("seed").optional_methods == ("kd_eid", "mhgd")
    assert presets.resolve("seed", ["methods=kd_eid,mhgd"]).methods == ("kd_eid", "mhgd")
    assert presets.resolve("zero_shot").methods == presets.ZERO_SHOT_METHODS
    assert presets.resolve("seed").method_params == presets.SEED_CONVENTIONS  # no init_epochs: the seed's 40
    for method in ("fitnet", "fsp", "ab", "ft", "mhgd"):  # every initialisation stage: one epoch
        assert presets.resolve("quick").trainer_config("student", method=method).method_params == {"init_epochs": 1}


def test_presets_are_valid_and_distinct():
    quick = presets.resolve("quick")
    assert (quick.teacher.model, quick.student.model) == ("resnet32", "resnet8")
    assert quick.data.train_per_class == 250 and quick.data.eval_per_class is None
    seed = presets.resolve("seed")
    assert (seed.teacher.model, seed.student.model, seed.trials) == ("seed_resnet32", "seed_resnet8", 5)
    assert seed.student.epochs == 100 and seed.student.lr_decay_at == (0.3, 0.6, 0.8)


def test_overrides_parse_json_and_dotted_paths():
    preset = presets.resolve("smoke", ["student.epochs=3", "data.train_per_class=null", "trials=2",
                                       "student.learning_rate=1", "methods=soft_logits",
                                       "method_params.soft_logits.temperature=4"])
    assert preset.student.epochs == 3 and preset.data.train_per_class is None and preset.trials == 2
    assert preset.student.learning_rate == 1.0 and preset.methods == ("soft_logits",)
    assert preset.method_params["soft_logits"] == {"temperature": 4}
    config = preset.trainer_config("student", trial=2, method="soft_logits")
    assert (config.seed, config.trial, config.method_params) == (1, 2, {"temperature": 4})


@pytest.mark.parametrize("overrides, message", [
    (["teacher.model=resnet9"], "override 'teacher.model': .*unknown model 'resnet9'; valid: .*resnet8x4"),
    (["methods=soft_logits,kd"], r"unknown method\(s\) \['kd'\]; valid: .*soft_logits"),
    (["student.epochs=0"], r"epochs must be an integer in \[1, 1000\], got 0"),
    (["student.epochs=two"], "override 'student.epochs': expected an integer"),
    (["student.learning_rate=-0.1"], r"learning_rate must be a finite number in \(0, 10\]"),
    (["trials=0"], r"trials must be an integer in \[1, 100\]"),
    (["data.train_per_class=501"], r"data.train_per_class must be null or an integer in \[1, 500\]"),
    (["student.optimizer=adam"], r"unknown key 'student.optimizer'.*valid: \['batch_size'"),
    (["epochs=3"], "unknown key 'epochs'"),
    (["method_params.soft_logits.tau=2"], r"unknown parameter\(s\) \['tau'\]"),
    (["method_params.kd.temperature=2"], r"method_params for unknown method\(s\) \['kd'\]"),
    (["student.epochs"], "must look like key=value"),
])
def test_invalid_overrides_fail_with_what_is_valid(overrides, message):
    with pytest.raises(presets.PresetError, match=message):
        presets.resolve("quick", overrides)


def test_unknown_preset_lists_presets():
    with pytest.raises(presets.PresetError, match="unknown preset 'fast'; valid presets: smoke, quick, seed, crd, zero_shot"):
        presets.resolve("fast")


def test_crd_preset_is_repdistillers_recipe():
    preset = presets.resolve("crd")
    assert (preset.teacher.model, preset.student.model, preset.trials, preset.protocol) == (
        "resnet32x4", "resnet8x4", 5, "crd")
    for training in (preset.teacher, preset.student):
        assert (training.epochs, training.batch_size, training.learning_rate, training.momentum,
                training.nesterov, training.weight_decay) == (240, 64, 0.05, 0.9, False, 5e-4)
    # train_student.py: lr x0.1 once the epoch passes 150, 180, 210.
    assert preset.trainer_config("student", method="at").decay_epochs() == [150, 180, 210]
    assert preset.method_params["soft_logits"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9,
                                                   "temperature_squared": True}


def test_crd_mobile_student_trains_at_a_lower_rate():
    preset = presets.resolve("crd", ["student.model=mobile_half", "teacher.model=vgg13",
                                     'methods=["soft_logits", "at"]'])
    assert preset.trainer_config("baseline").learning_rate == 0.01
    assert preset.trainer_config("student", method="at").learning_rate == 0.01
    assert preset.trainer_config("teacher").learning_rate == 0.05


def test_a_pair_a_method_cannot_compare_fails_before_anything_runs():
    with pytest.raises(presets.PresetError, match=r"method 'at' compares taps position by position.*"
                                                  r"stage1 16x16 vs 32x32.*student mobile_half, teacher resnet32x4"):
        presets.resolve("crd", ["student.model=mobile_half"])
    with pytest.raises(presets.PresetError, match=r"method 'fsp' needs equal channel counts.*stage1 16 vs 64"):
        presets.resolve("crd", ["student.model=resnet20", 'methods=["fsp"]'])
    # Logit-based methods fit every pair.
    presets.resolve("crd", ["student.model=mobile_half", 'methods=["soft_logits", "rkd"]'])


def test_unknown_model_lists_the_zoo():
    with pytest.raises(presets.PresetError, match="unknown model 'resnet9'.*mobile_half.*vgg13.*wrn_40_2"):
        presets.resolve("crd", ["student.model=resnet9"])
