"""Leaderboard: the benchmark's results from the pipeline's own artifacts, as a TFX component.

Inputs are every Trainer's Model and every Evaluator's ModelEvaluation and ModelBlessing; the
output is a folder of tables, plots and an HTML report. The executor only gathers the input
artifacts: kd_results reads them into records (kd_results/records.py) and writes the report
(kd_results/report.py), as `kd report` does for a finished run.
"""

from __future__ import annotations

import json
from typing import Sequence

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from kd_results.records import collect_records
from kd_results.report import write_report


class LeaderboardArtifact(types.Artifact):
    """A folder with the leaderboard tables, plots and HTML report."""

    # KFP v2 (Kubeflow, Vertex AI) accepts custom artifact types named `<namespace>.<Name>` only.
    # On Kubeflow, TFX's entry point imports a custom type by its name, which must also be a
    # KFP schema title (`namespace.Title`, one dot): `components.LeaderboardArtifact`, which
    # components/__init__.py resolves (tests/test_kubeflow_executed.py runs it).
    TYPE_NAME = "components.LeaderboardArtifact"
    # The names runs recorded before the renames carry in ML Metadata.
    LEGACY_TYPE_NAMES = ("kd_benchmark.Leaderboard", "KDLeaderboard")


# Input kinds; each upstream output is its own input `<kind>_<i>`, since KFP v2 (Kubeflow,
# Vertex AI) compiles single channels only, not unions. Every input is optional: the
# Evaluator of a diverged model is skipped and leaves its inputs here empty.
INPUT_TYPES = {"model": standard_artifacts.Model, "evaluation": standard_artifacts.ModelEvaluation,
               "blessing": standard_artifacts.ModelBlessing}


class LeaderboardSpec(ComponentSpec):
    PARAMETERS = {"configuration": ExecutionParameter(type=str), "title": ExecutionParameter(type=str)}
    INPUTS: dict = {}  # per pipeline: see Leaderboard
    OUTPUTS = {"leaderboard": ChannelParameter(type=LeaderboardArtifact)}


def _inputs_of_kind(input_dict: dict[str, list[types.Artifact]], kind: str) -> list[types.Artifact]:
    return [artifact for key, artifacts in sorted(input_dict.items()) if key.rsplit("_", 1)[0] == kind
            for artifact in artifacts]


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        blessings = {b.get_string_custom_property("current_model").rstrip("/"):
                     bool(b.get_int_custom_property("blessed")) for b in _inputs_of_kind(input_dict, "blessing")}
        records = collect_records([e.uri for e in _inputs_of_kind(input_dict, "evaluation")], blessings,
                                  [m.uri for m in _inputs_of_kind(input_dict, "model")])
        output = output_dict["leaderboard"][0]
        write_report(output.uri, records, json.loads(exec_properties["configuration"]), exec_properties["title"])


class Leaderboard(base_component.BaseComponent):
    """Aggregates every Trainer and Evaluator of the run into tables, plots and a report.

    Args:
      models / evaluations / blessings: every Trainer's and Evaluator's output channel.
      configuration: JSON of the preset that produced the run (shown in the report).
      title: report title.
    """

    SPEC_CLASS = LeaderboardSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, models: Sequence[types.BaseChannel], evaluations: Sequence[types.BaseChannel],
                 blessings: Sequence[types.BaseChannel], configuration: str, title: str):
        inputs = {f"{kind}_{i}": channel for kind, channels in
                  (("model", models), ("evaluation", evaluations), ("blessing", blessings))
                  for i, channel in enumerate(channels)}
        spec_class = type(LeaderboardSpec.__name__, (LeaderboardSpec,), {
            "INPUTS": {key: ChannelParameter(type=INPUT_TYPES[key.rsplit("_", 1)[0]], optional=True)
                       for key in inputs}})
        super().__init__(spec_class(**inputs, configuration=configuration, title=title,
                                    leaderboard=types.Channel(type=LeaderboardArtifact)))
