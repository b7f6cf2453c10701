"""One ModelPress step in a team's own Kubeflow pipeline: `modelpress.kfp.step("prune", config={...})`.

The result is called inside a `@dsl.pipeline` with the step's inputs (artifacts of other tasks) and returns the KFP
task, already placed as a compiled ModelPress pipeline places it: the step's image, GPU, the S3 Secret, CPU and
memory, timeout and retries (`compiler.set_pod_options`). Its output is `task.outputs["output_<kind>"]`
(`output_model` for a model). docs/reusable-steps.md has an example.
"""

from __future__ import annotations

from typing import Any

from modelpress.execution.parameters import MISSING, field_at, step_parameters
from modelpress.kubernetes.pods import pod_placement
from modelpress.steps.catalog import checked_step, step_resources

from .compiler import set_pod_options
from .components import step_component


def step(name: str, config: dict[str, Any] | None = None, image: str | None = None, kubernetes: dict[str, Any] | None = None):
    """The step `name` as a task factory for a KFP pipeline. `config`: the step's config (as `modelpress step NAME
    --config` takes it), checked now; `image`: instead of the step's stock image (e.g. one `modelpress images --with`
    built); `kubernetes`: the workflow's `kubernetes:` section (namespace, GPU pool, Secret, resources)."""
    spec, settings, step_config = checked_step(f"modelpress.kfp.step('{name}')", name, config, kubernetes)
    placed = pod_placement(spec.placement, settings, step_resources(name, settings))
    component = step_component(name, image or placed.image)

    # The run parameters the component takes, bound to the config's values (shown in the UI; an unbound integer
    # parameter would reach the step as None).
    bound = {p.name: value for p in step_parameters(spec) if (value := field_at(step_config, p.path)[0]) not in (MISSING, None)}

    def task(**inputs):
        kfp_task = component(config=step_config.model_dump_json(exclude_unset=True), **bound, **inputs)
        set_pod_options(kfp_task, spec, settings, placed)
        return kfp_task

    task.__name__ = name
    return task
