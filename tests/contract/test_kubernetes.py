"""The kubernetes section's per-step resources: Kubernetes quantities, requests within limits, known step names, and
the step catalog's defaults under what the workflow sets; every mistake is one line naming file, line and key."""

from __future__ import annotations

import pytest

from modelpress.common.errors import UserError
from modelpress.contract.kubernetes import KubernetesSpec, quantity_value
from modelpress.execution.plan import load_workflow
from modelpress.steps.catalog import STEPS, step_resources


@pytest.mark.parametrize(
    "resources, message",
    [
        ("{train: {cpu: 2x}}", "line 14: kubernetes.resources.train.cpu: '2x' is not a CPU quantity"),
        ("{train: {memory: 8K}}", "line 14: kubernetes.resources.train.memory: '8K' is not a memory quantity"),
        ("{train: {memory: 1.5Gi}}", "kubernetes.resources.train.memory: '1.5Gi' is not a memory quantity"),
        ("{train: {timeout_minutes: 0}}", "kubernetes.resources.train.timeout_minutes: Input should be greater than 0"),
        ("{trian: {cpu: '2'}}", "line 14: kubernetes.resources.trian: no step 'trian'; resources are keyed by step: tune, train"),
        ("{push: {memory: 3Gi, memory_limit: 2Gi}}", "kubernetes.resources.push: memory 3Gi is more than memory_limit 2Gi"),
        # The step's default limit (train: 16Gi) still holds when only the request is raised.
        ("{train: {memory: 32Gi}}", "kubernetes.resources.train: memory 32Gi is more than memory_limit 16Gi; Kubernetes refuses"),
        ("{validate: {cpu: '2', cpu_limit: 1500m}}", "kubernetes.resources.validate: cpu 2 is more than cpu_limit 1500m"),
    ],
)
def test_a_wrong_resource_is_one_line_naming_file_line_and_key(tiny_workflow, resources, message):
    tiny_workflow.write_text(tiny_workflow.read_text() + f"kubernetes:\n  resources: {resources}\n")
    with pytest.raises(UserError) as error:
        load_workflow(tiny_workflow)
    assert str(error.value).startswith(str(tiny_workflow)) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_workflow_sets_what_it_names_and_the_step_keeps_its_other_defaults(tiny_workflow):
    tiny_workflow.write_text(tiny_workflow.read_text() + "kubernetes:\n  resources: {train: {memory: 12Gi, timeout_minutes: 30}, push: {memory_limit: null}}\n")
    settings = load_workflow(tiny_workflow).kubernetes
    train = step_resources("train", settings)
    assert train.model_dump() == {"cpu": "4", "memory": "12Gi", "cpu_limit": "8", "memory_limit": "16Gi", "timeout_minutes": 30}
    assert step_resources("push", settings).memory_limit is None  # null lifts the default limit
    assert step_resources("validate", settings) == STEPS["validate"].resources


def test_training_and_compression_steps_ask_for_more_than_publishing_and_every_step_has_a_timeout():
    settings = KubernetesSpec()
    memory = {name: quantity_value(step_resources(name, settings).memory) for name in STEPS}
    for heavy in ("tune", "train", "prune", "cluster", "quantize", "distill"):
        assert memory[heavy] > memory["validate"] > memory["push"] == memory["deploy"], heavy
    assert all(step_resources(name, settings).timeout_minutes for name in STEPS)
    assert quantity_value("500m") == 0.5 and quantity_value("2Gi") == 2 * 1024**3 and quantity_value("4") == 4
