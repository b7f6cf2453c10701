"""One KFP lightweight component per registered step, generated from `registry.STEPS`.

A component's signature is derived from its StepSpec (so a newly registered step needs no edit here):
  config: str                      the step config as JSON (from the plan, fixed at compile time)
  <input>: Input[Model|Artifact]   one per required input; optional inputs default to None
  after: Input[Artifact]           a search rung's first tasks: the search task they wait for (execution.driver)
  output_<kind>: Output[...]       the step's output folder (Model for model artifacts), its metadata what the
                                   artifact is and its lineage (execution.outputs: format, digest, scores, data
                                   digest, parent, release)
  metrics: Output[Metrics]         the scalar metrics of the step's result (push, deploy: the release's version)
  validation steps also get confusion_matrix: Output[ClassificationMetrics] and report: Output[HTML],
  and return the blessing (a bool, what `dsl.If` gates deploy on)
  <parameter>: Optional[type]      pipeline parameters that can override a field of this step's config
  data_digest: Optional[str]       steps reading the data: the run's data digest, only a key of KFP's cache

The run's `report` component (report_source) reads every validation and writes summary.json with the HTML report
and the Markdown model card as the UI's artifacts (`modelpress report`).

The body runs `modelpress step NAME ...` through the CLI's own entry point inside the task's image (plan.placement):
no packages_to_install and no runtime pip (the images carry modelpress and the kfp executor).
KFP embeds a component's source text, so the function is generated as source and registered with linecache.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import textwrap
import typing

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Input, Markdown, Metrics, Model, Output

from modelpress.execution.driver import AFTER_INPUT
from modelpress.execution.parameters import model_has_path, step_parameters
from modelpress.steps.catalog import StepSpec, get_step


def output_name(step: StepSpec) -> str:
    return f"output_{step.output}"


def returns_blessing(step: StepSpec) -> bool:
    return step.output == "validation"


def input_type(name: str) -> str:
    """Model-typed when it is a model input; anything else is a generic Artifact (KFP accepts any type for it)."""
    return "Model" if name == "model" else "Artifact"


def artifact_address(artifact):
    """A URI any pod can open: the step reads and writes the pipeline root itself (KFP's minio:// is the s3:// bucket
    on the MinIO endpoint), so blessings, results and manifests name URIs, never a pod's local copy, and
    <run>/registry or <run>/serving defaults land in the run's storage. kfp.local's root is a folder every task mounts."""
    scheme, sep, rest = artifact.uri.partition("://")
    if not sep:
        return artifact.path
    if scheme in ("s3", "minio"):
        return f"s3://{rest}"
    raise SystemExit(
        f"modelpress: error: artifact {artifact.uri} is in {scheme}:// storage, which ModelPress steps cannot open; "
        "run the pipeline with an s3:// or minio:// pipeline root"
    )


def _component_body(step_name, config, overrides, inputs, output, metrics, confusion_matrix, report):
    """Runs inside the step's container: `modelpress step` (the core's task driver: overrides, skip markers,
    nothing-blessed), then the step's result as KFP metrics, output metadata (execution.outputs), confusion matrix
    and HTML report."""
    import json
    import os
    import tempfile

    from modelpress.cli.main import main

    def written(*artifacts):
        """Metadata-only artifacts also as files: kfp.local's cache takes an artifact without a file for a lost one."""
        for artifact in artifacts:
            if artifact is not None:
                os.makedirs(os.path.dirname(artifact.path), exist_ok=True)
                with open(artifact.path, "w") as handle:
                    json.dump(artifact.metadata, handle)

    argv = ["step", step_name, "--config", config, "--output", artifact_address(output)]
    for path, value in overrides:
        if value is not None:
            argv += ["--set", f"{path}={json.dumps(value)}"]
    for name, artifacts in inputs.items():
        for item in artifacts if isinstance(artifacts, list) else [artifacts]:
            for artifact in item if isinstance(item, list) else [item]:  # a collected ParallelFor output is a list
                if artifact is not None:
                    argv += ["--input", f"{name}={artifact_address(artifact)}"]
    with tempfile.TemporaryDirectory() as scratch:
        result_file = os.path.join(scratch, "result.json")
        code = main([*argv, "--result", result_file])
        if code != 0:
            raise SystemExit(code)
        with open(result_file) as handle:
            result = json.load(handle)
    if result.get("skipped"):  # the tasks reading this output skip too (its skip marker)
        metrics.metadata["skipped"] = result["reason"]
        written(metrics, confusion_matrix)
        return None if confusion_matrix is None else False
    from modelpress.execution.outputs import task_outputs

    values, metadata = task_outputs(step_name, artifact_address(output), result)
    for key, value in values.items():
        metrics.log_metric(key, value)
    output.metadata.update(metadata)  # what the artifact is and its lineage, shown beside it in the UI
    if "release" in metadata:
        metrics.metadata.update(metadata)
    written(metrics)
    if confusion_matrix is None:
        return None
    from modelpress.io import storage
    from modelpress.io.artifacts import read_blessing
    from modelpress.io.report import artifact_rows, html_report

    evaluation = json.loads(storage.read_bytes(storage.join(artifact_address(output), "evaluation.json")))
    names = evaluation.get("class_names") or [str(i) for i in range(len(evaluation["confusion_matrix"]))]
    confusion_matrix.log_confusion_matrix([str(n) for n in names], evaluation["confusion_matrix"])
    written(confusion_matrix)
    blessing = read_blessing(artifact_address(output))[0]
    gates = ", ".join(f"{k} {v}" for k, v in blessing.thresholds.items()) or "none configured"
    row = {**blessing.model_dump(), "validation_uri": artifact_address(output)}  # a rejection's per-layer report is there
    page = html_report(blessing.name, {"created": ""}, artifact_rows([row], {}, {}), [], gates, b"")
    with open(report.path, "w") as handle:
        handle.write(page)
    return bool(result.get("blessed", False))


def list_input_names(name: str, singles: int, collected: tuple[str, ...]) -> list[str]:
    """KFP has no list of separate tasks' artifacts: a list input becomes one input per fan-out feeding it (its
    ParallelFor's collected outputs, `name_<image>`) plus one optional input per other source (`name_1`, ...);
    the body joins them again."""
    return [f"{name}_{label}" for label in collected] + [f"{name}_{i}" for i in range(1, singles + 1)]


def list_input_parameters(kind: str, name: str, singles: int, collected: tuple[str, ...]) -> list[str]:
    """The component parameters of a list input (list_input_names), each optional."""
    return [f"{name}_{label}: Input[List[{kind}]] = None" for label in collected] + [
        f"{name}_{i}: Input[{kind}] = None" for i in range(1, singles + 1)
    ]


def component_source(name: str, step: StepSpec, list_shapes: tuple[tuple[str, int, tuple[str, ...]], ...] = (), waits: bool = False) -> str:
    """The Python source of the step's component function (a valid identifier, one nested helper).

    `list_shapes`: for each list input, (name, number of single sources, labels of the fan-outs feeding it);
    `waits`: the task has the `after` input.
    """
    shapes = {shape[0]: shape for shape in list_shapes}
    required, optional, inputs = ["config: str"], [], []
    for input_name in (*step.inputs, *step.optional_inputs):
        kind = input_type(input_name)
        if input_name in shapes:
            optional += list_input_parameters(kind, *shapes[input_name])
            inputs.append(f"{input_name!r}: [{', '.join(list_input_names(*shapes[input_name]))}]")
        elif input_name in step.inputs:
            required.append(f"{input_name}: Input[{kind}]")
            inputs.append(f"{input_name!r}: {input_name}")
        else:
            optional.append(f"{input_name}: Input[{kind}] = None")
            inputs.append(f"{input_name!r}: {input_name}")
    if waits:
        required.append(f"{AFTER_INPUT}: Input[Artifact]")
        inputs.append(f"{AFTER_INPUT!r}: {AFTER_INPUT}")
    output_type = "Model" if step.output == "model" else "Artifact"
    required += [f"{output_name(step)}: Output[{output_type}]", "metrics: Output[Metrics]"]
    if returns_blessing(step):
        required += ["confusion_matrix: Output[ClassificationMetrics]", "report: Output[HTML]"]
    parameters = step_parameters(step)
    optional += [f"{p.name}: Optional[{p.type.__name__}] = None" for p in parameters]
    if model_has_path(step.config, "data"):
        optional.append("data_digest: Optional[str] = None")
    returns = " -> bool" if returns_blessing(step) else ""
    overrides = ", ".join(f"({p.path!r}, {p.name})" for p in parameters)
    extra = "confusion_matrix, report" if returns_blessing(step) else "None, None"
    helpers = "\n".join(inspect.getsource(f) for f in (artifact_address, _component_body))
    helper = textwrap.indent(textwrap.dedent(helpers), "    ")
    return (
        f"def {name.replace('-', '_')}({', '.join(required + optional)}){returns}:\n"
        f'    """{step.description or name} (runs `modelpress step {name}`)."""\n'
        f"{helper}\n"
        f"    return _component_body({name!r}, config, [{overrides}], {{{', '.join(inputs)}}}, {output_name(step)}, metrics, {extra})\n"
    )


def _report_body(name, validations, summary, report, model_card):
    """Runs in the report's image: `modelpress report` into the summary artifact's folder (summary.json, report.md,
    report.html, report.png), then the HTML report and the Markdown model card as the UI's artifacts."""
    import json

    from modelpress.cli.main import main
    from modelpress.io import storage

    folder = artifact_address(summary)
    argv = ["report", "--name", name, "--output", folder]
    for item in validations:
        for artifact in item if isinstance(item, list) else [item]:  # a collected ParallelFor output is a list
            if artifact is not None:
                argv += ["--validation", artifact_address(artifact)]
    code = main(argv)
    if code != 0:
        raise SystemExit(code)
    for artifact, file in ((report, "report.html"), (model_card, "report.md")):
        with open(artifact.path, "wb") as handle:
            handle.write(storage.read_bytes(storage.join(folder, file)))
    written = json.loads(storage.read_bytes(storage.join(folder, "summary.json")))
    summary.metadata.update({"artifacts": [row["name"] for row in written["artifacts"]], "blessed": written["blessed"]})


def report_source(shape: tuple[str, int, tuple[str, ...]]) -> str:
    """The Python source of the report component, whose list input `validations` has `shape` (list_input_names)."""
    parameters = ["name: str", "summary: Output[Artifact]", "report: Output[HTML]", "model_card: Output[Markdown]"]
    helpers = textwrap.indent(textwrap.dedent("\n".join(inspect.getsource(f) for f in (artifact_address, _report_body))), "    ")
    return (
        f"def report({', '.join(parameters + list_input_parameters('Artifact', *shape))}):\n"
        '    """The run report of every validation: summary.json, report.html and the model card (Markdown)."""\n'
        f"{helpers}\n"
        f"    return _report_body(name, [{', '.join(list_input_names(*shape))}], summary, report, model_card)\n"
    )


def define_component(name: str, source: str, image: str):
    """A KFP component from generated source (registered with linecache, which KFP reads it back from)."""
    filename = f"<modelpress component {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {
        "Input": Input, "Output": Output, "Artifact": Artifact, "Model": Model, "Metrics": Metrics,
        "ClassificationMetrics": ClassificationMetrics, "HTML": HTML, "Markdown": Markdown, "List": typing.List, "Optional": typing.Optional,  # noqa: UP006 (the names the generated source uses)
    }  # fmt: skip
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # real annotations: KFP reads them
    function = namespace[name.replace("-", "_")]
    return dsl.component(base_image=image, install_kfp_package=False)(function)


@functools.cache
def step_component(name: str, image: str, list_shapes: tuple[tuple[str, int, tuple[str, ...]], ...] = (), waits: bool = False):
    """The KFP component of a registered step running in `image` (cached: one per step, image, list-input shape and
    whether it has the `after` input)."""
    return define_component(name, component_source(name, get_step(name), list_shapes, waits), image)


@functools.cache
def report_component(image: str, shape: tuple[str, int, tuple[str, ...]]):
    return define_component("report", report_source(shape), image)
