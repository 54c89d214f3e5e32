"""kd_trainer/fields.py: every configuration field declares its rule, and the rules' checks,
coercions and messages. TensorFlow-free."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from kd_trainer import config, fields, methods
from pipelines import presets

CONFIGURATION_CLASSES = [config.TrainingConfig, config.TrainerConfig, config.ImpressionOptions, presets.DataConfig,
                         presets.ResourcesConfig, presets.TeacherConfig, presets.ZeroShotConfig, presets.Preset]


@pytest.mark.parametrize("cls", [*{entry.params for entry in methods.CATALOG.values()}, *CONFIGURATION_CLASSES],
                         ids=lambda cls: cls.__name__)
def test_every_field_declares_its_rule(cls):
    """A field made without kd_trainer.fields would go unchecked: that is a test failure."""
    missing = [field.name for field in dataclasses.fields(cls) if fields.rule_of(field) is None]
    assert not missing, f"{cls.__name__}: fields without a rule: {missing}"


@pytest.mark.parametrize("name", methods.CATALOG)
def test_a_methods_defaults_keep_its_rules(name):
    assert fields.problems(methods.CATALOG[name].params()) == []


# --------------------------------------------------------------------------- rules

@pytest.mark.parametrize("rule, value, problem", [
    (fields.Range(int, 1, 1024), 0, "must be an integer in [1, 1024], got 0"),
    (fields.Range(int, 1, 1024), 1025, "must be an integer in [1, 1024], got 1025"),
    (fields.Range(int, 0, 5), 2.0, "must be an integer in [0, 5], got 2.0"),
    (fields.Range(int, 0, 5), True, "must be an integer in [0, 5], got True"),
    (fields.Range(float, 0.01, 1000), 0.0, "must be a finite number in [0.01, 1000], got 0.0"),
    (fields.Range(float, 0, 1e6), -0.3, "must be a finite number in [0, 1e+06], got -0.3"),
    (fields.Range(float, 0, 1e6), math.nan, "must be a finite number in [0, 1e+06], got nan"),
    (fields.Range(float, 0, 1e6), math.inf, "must be a finite number in [0, 1e+06], got inf"),
    (fields.Range(float, 0, 10, low_open=True), 0, "must be a finite number in (0, 10], got 0"),
    (fields.Range(float, 0, 1, high_open=True), 1.0, "must be a finite number in [0, 1), got 1.0"),
    (fields.Range(float, 0, 1), False, "must be a finite number in [0, 1], got False"),
    (fields.Choices(("sequential", "simultaneous")), "parallel",
     "must be one of sequential, simultaneous, got 'parallel'"),
    (fields.Choices(("", "seed")), "crd", "must be one of '', seed, got 'crd'"),
    (fields.Names(("stage1", "stage2")), "stage1,stage1",
     "must be distinct names among stage1, stage2 separated by commas, got 'stage1,stage1'"),
    (fields.Names(("stage1", "stage2")), "stage9", "must be distinct names among stage1, stage2 separated by "
                                                   "commas, got 'stage9'"),
    (fields.Names(("stage1", "stage2")), "", "must be distinct names among stage1, stage2 separated by commas, "
                                             "got ''"),
    (fields.OfType(bool), 1, "must be true or false, got 1"),
    (fields.OfType(str), True, "must be a string, got True"),
    (fields.OfType(int), True, "must be an integer, got True"),
])
def test_a_rule_states_what_is_wrong(rule, value, problem):
    assert rule.problem(value) == problem


@pytest.mark.parametrize("rule, value", [
    (fields.Range(int, 1, 1024), 1), (fields.Range(int, 1, 1024), 1024), (fields.Range(float, 0, 1), 0),
    (fields.Range(float, 0, 1), 1.0), (fields.Range(float, 0, 1, low_open=True), 1e-300),
    (fields.Choices(("", "seed")), ""), (fields.Names(("stage1", "stage2")), "stage2,stage1"),
    (fields.OfType(bool), False), (fields.OfType((tuple, list)), [0.5]),
])
def test_a_rule_accepts_its_values(rule, value):
    assert rule.problem(value) is None


@dataclasses.dataclass(frozen=True)
class Example:
    rate: float = fields.number(0.5, 0, 1)
    count: int = fields.integer(3, 1, 10)
    limit: int | None = fields.integer(None, 1, 10, optional=True)
    order: str = fields.choice("first", "second")
    points: tuple[float, ...] = fields.free((tuple, list), (0.3, 0.6))
    verbose: bool = fields.flag(False)


def test_problems_name_each_field_and_allow_an_optional_none():
    assert fields.problems(Example()) == []
    bad = Example(rate=2.0, count=0, limit=0, order="third", verbose="yes")
    assert fields.problems(bad, lambda name: f"example.{name}") == [
        "example.rate must be a finite number in [0, 1], got 2.0",
        "example.count must be an integer in [1, 10], got 0",
        "example.limit must be null or an integer in [1, 10], got 0",
        "example.order must be one of first, second, got 'third'",
        "example.verbose must be true or false, got 'yes'"]


def test_declarations_record_their_rules():
    rules = {field.name: fields.rule_of(field) for field in dataclasses.fields(Example)}
    assert rules["rate"] == fields.Range(float, 0, 1)
    assert rules["count"] == fields.Range(int, 1, 10)
    assert rules["order"] == fields.Choices(("first", "second"))
    assert rules["verbose"] == fields.OfType(bool)
    assert {field.name: field.metadata["optional"] for field in dataclasses.fields(Example)}["limit"] is True


# --------------------------------------------------------------------------- coercion of JSON and --set values

@pytest.mark.parametrize("value, annotation, expected", [
    (3, float, 3.0),  # an int where a float is declared
    ("0.5,0.75", tuple[float, ...], (0.5, 0.75)),  # --set x=0.5,0.75
    ("1, 2", tuple[float, ...], (1.0, 2.0)),
    ([0.3, 1], tuple[float, ...], (0.3, 1.0)),  # JSON has no tuples
    (None, typing.Optional[int], None),
    (None, int | None, None),
    (4, int | None, 4),
    (True, bool, True),
    ({"a": "b"}, dict[str, str], {"a": "b"}),
    ("x", typing.Any, "x"),
])
def test_coerce_turns_a_json_value_into_the_declared_type(value, annotation, expected):
    got = fields.coerce(value, annotation)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, annotation, message", [
    (True, int, "expected an integer, got True"),  # bools are not numbers here
    (False, float, "expected a number, got False"),
    (1.5, int, "expected an integer, got 1.5"),
    ("hot", float, "expected a number, got 'hot'"),
    (1, bool, "expected true or false, got 1"),
    ("yes", bool, "expected true or false, got 'yes'"),
    (1, str, "expected a string, got 1"),
    ("0.5,x", tuple[float, ...], "expected a number, got 'x'"),
    (0.5, tuple[float, ...], "expected a list, got 0.5"),
    ("a", dict[str, str], "expected an object, got 'a'"),
])
def test_coerce_refuses_another_type(value, annotation, message):
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        fields.coerce(value, annotation)


def test_parse_names_the_owner_and_the_field():
    def label(name):
        return f"thing: field '{name}'"

    assert fields.parse(Example, {"rate": 1, "points": "0.1,0.2"}, label, "thing") == Example(rate=1.0,
                                                                                              points=(0.1, 0.2))
    with pytest.raises(ValueError, match=r"^thing: unknown parameter\(s\) \['speed'\]; valid: \['count', "):
        fields.parse(Example, {"speed": 1}, label, "thing")
    with pytest.raises(ValueError, match=r"^thing: parameters must be an object of name: value, got 3$"):
        fields.parse(Example, 3, label, "thing")
    with pytest.raises(ValueError, match=r"^thing: field 'count': expected an integer, got 'many'$"):
        fields.parse(Example, {"count": "many"}, label, "thing")
    with pytest.raises(ValueError, match=r"^thing: field 'rate' must be a finite number in \[0, 1\], got 2.0; "
                                         r"thing: field 'order' must be one of first, second, got 'x'$"):
        fields.parse(Example, {"rate": 2, "order": "x"}, label, "thing")


# --------------------------------------------------------------------------- the messages users see

@pytest.mark.parametrize("name, values, message", [
    ("soft_logits", {"temperature": 0.0},
     "method 'soft_logits': parameter 'temperature' must be a finite number in [0.01, 1000], got 0.0"),
    ("soft_logits", {"ce_weight": math.nan},
     "method 'soft_logits': parameter 'ce_weight' must be a finite number in [0, 1e+06], got nan"),
    ("kd_svd", {"k": 0}, "method 'kd_svd': parameter 'k' must be an integer in [1, 1024], got 0"),
    ("dml", {"update_order": "parallel"},
     "method 'dml': parameter 'update_order' must be one of sequential, simultaneous, got 'parallel'"),
    ("soft_logits", {"temperature": "hot"}, "method 'soft_logits': parameter 'temperature': expected a number, "
                                            "got 'hot'"),
    ("ab", {"preact": "no"}, "method 'ab': parameter 'preact': expected true or false, got 'no'"),
    ("at", {"beta": 1.0, "weight": 2.0}, "method 'at': unknown parameter(s) ['weight']; valid: ['beta']"),
])
def test_method_parameter_messages(name, values, message):
    with pytest.raises(ValueError) as error:
        methods.catalog.check_params(name, values)
    assert str(error.value) == message


def test_configuration_messages_name_the_class_and_the_field():
    with pytest.raises(ValueError) as error:
        config.TrainingConfig(model="resnet8", epochs=0, mixed_precision="fp8")
    assert str(error.value) == ("invalid TrainingConfig: epochs must be an integer in [1, 1000], got 0; "
                                "mixed_precision must be one of auto, float32, mixed_bfloat16, mixed_float16, "
                                "got 'fp8'")
