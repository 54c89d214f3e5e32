"""The published figures kept as data (kd_results/published/*.csv) and their matching rules."""

import pytest

from kd_results import published
from kd_trainer import model_specs
from kd_trainer.methods import catalog

def test_every_figure_names_our_models_and_methods_and_a_source():
    figures = published.load()
    assert len(figures) > 100
    for figure in figures:
        assert figure.teacher in model_specs.MODEL_SPECS and figure.student in model_specs.MODEL_SPECS
        assert figure.method in {"teacher", "baseline"} | set(catalog.CATALOG), figure
        assert figure.last is not None or figure.best is not None
        assert 0 < (figure.last or figure.best) < 100
        assert figure.protocol in ("seed", "crd")
        assert figure.source


def test_anchor_values_from_the_sources():
    figures = published.load()
    crd = published.beside("crd", "resnet32x4", "resnet8x4",
                           {"soft_logits": {"logit_standardization": False}, "teacher": {}}, figures)
    assert [(f.last, f.best) for f in crd["soft_logits"]] == [(73.33, None)]  # RepDistiller README, last epoch
    assert crd["teacher"][0].last == 79.42


def test_a_figure_that_needs_parameters_applies_only_with_them():
    figures = published.load()
    standardised = published.beside("crd", "resnet32x4", "resnet8x4",
                                    {"soft_logits": {"logit_standardization": True}}, figures)
    by_source = {f.source.split(",")[0]: f for f in standardised["soft_logits"]}
    assert by_source["sunshangquan/logit-standardization-KD"].best == 76.62
    assert by_source["HobbitLong/RepDistiller"].last == 73.33


def test_a_malformed_file_names_its_line(tmp_path):
    (tmp_path / "bad.csv").write_text("# source\nprotocol,teacher,student,method,params,last,best\n"
                                      "crd,resnet32x4,resnet8x4,at,,high,\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: expected a top-1 accuracy"):
        published.load(tmp_path)
    (tmp_path / "bad.csv").write_text("protocol,teacher\n")
    with pytest.raises(ValueError, match="first line must be"):
        published.load(tmp_path)
