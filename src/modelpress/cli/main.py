"""The `modelpress` command. Subcommands are registered in COMMANDS; each has its own --help with examples.

User mistakes exit non-zero with one line on stderr: `modelpress: error: <what is wrong and how to fix it>`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable

from modelpress.common.errors import UserError

EPILOG = """\
examples:
  modelpress check examples/digits_mlp.yaml          validate a workflow and print its plan
  modelpress run examples/digits_mlp.yaml --out runs/mlp
                                                     train, compress, convert, validate, report
  modelpress step train --config @cfg.json --output s3://bucket/runs/1/train
                                                     run one step (what the containers run)
  modelpress steps                                   list the registered steps
"""


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=110)


def add_run(sub) -> None:
    parser = sub.add_parser(
        "run",
        help="run a workflow locally end to end",
        formatter_class=Formatter,
        description=textwrap.dedent(
            """\
            Run every step of a workflow on this machine: train, the compress techniques in order, a conversion
            per target, validation of every artifact against the gates, then the report (summary.json,
            report.md, report.html) in the run folder. Progress goes to stderr, the artifact table to stdout.
            """
        ),
        epilog="example:\n  modelpress run examples/digits_mlp.yaml --out runs/demo --overwrite",
    )
    parser.add_argument("workflow", help="workflow YAML file")
    parser.add_argument("--out", help="run folder or s3:// prefix (default: runs/<workflow name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run folder if it exists")
    parser.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    from modelpress.execution.plan import load_workflow
    from modelpress.execution.runner import run_workflow

    workflow = load_workflow(args.workflow)
    summary = run_workflow(workflow, args.out or f"runs/{workflow.name}", overwrite=args.overwrite)
    return 0 if summary["artifacts"] and not summary["failed"] else 1


def add_check(sub) -> None:
    parser = sub.add_parser(
        "check",
        help="validate a workflow file and show what would run",
        formatter_class=Formatter,
        description="Validate a workflow YAML (keys, types, values, technique parameters) and print the plan.\n"
        "With --data, also load the data and build the model to check that they fit together.",
        epilog="example:\n  modelpress check examples/digits_mlp.yaml --data",
    )
    parser.add_argument("workflow", help="workflow YAML file")
    parser.add_argument("--data", action="store_true", help="also load the data and build the model (needs TensorFlow)")
    parser.set_defaults(handler=cmd_check)


def cmd_check(args) -> int:
    from modelpress.execution.plan import build_plan, load_workflow, placement

    workflow = load_workflow(args.workflow)
    plan = build_plan(workflow)
    if args.data:
        from modelpress.execution.runner import preflight
        from modelpress.io.data import load_dataset

        preflight(workflow, "/nonexistent-modelpress-check-output", overwrite=True)
        print(f"data: {load_dataset(workflow.data).describe()}")
    print(f"{args.workflow}: workflow '{workflow.name}' is valid; {len(plan)} tasks:")
    for task in plan:
        where = placement(task)
        reads = ", ".join(task.sources()) or "-"
        print(f"  {task.id:<28} step {task.step:<9} image {where.dependency_set:<9} {'gpu ' if where.gpu else ''}reads {reads}")
    return 0


def add_step(sub) -> None:
    parser = sub.add_parser(
        "step",
        help="run one registered step (what the containers and orchestrators run)",
        formatter_class=Formatter,
        description=textwrap.dedent(
            """\
            Run one step: config as JSON (inline or @file), inputs as NAME=URI, one output URI.
            The step writes its output under a temporary name and moves it into place last; its result (metrics,
            blessing, URIs) is printed as JSON on stdout and written to --result if given
            (e.g. /airflow/xcom/return.json). `modelpress steps` lists steps, inputs and config keys.
            """
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              modelpress step train --config '{"model": {"zoo": "mlp"}, "data": {"source": "digits"}}' \\
                  --output runs/x/train
              modelpress step validate --config @validate.json --input model=runs/x/train --output runs/x/val
            """
        ),
    )
    parser.add_argument("name", help="step name, e.g. train, validate")
    parser.add_argument("--config", default="{}", help="step config as JSON, or @path/to/config.json")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=URI", help="an input (repeatable)")
    parser.add_argument("--output", required=True, help="where the step writes its output (path or s3://)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="PATH=VALUE",
        help="override a config field (JSON value), e.g. --set train.epochs=5 (repeatable; the UIs' run parameters)",
    )
    parser.add_argument("--result", help="also write the result JSON to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.set_defaults(handler=cmd_step)


def parse_assignment(item: str, flag: str, example: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise UserError(f"{flag} '{item}' must be {example}")
    return name, value


def cmd_step(args) -> int:
    from modelpress.execution.driver import run_task

    inputs: dict[str, str | list[str]] = {}
    for item in args.input:
        name, uri = parse_assignment(item, "--input", "NAME=URI, e.g. --input model=s3://bucket/run/train")
        if name in inputs:  # a repeated name is a list input, e.g. push's validations
            previous = inputs[name]
            inputs[name] = [*(previous if isinstance(previous, list) else [previous]), uri]
        else:
            inputs[name] = uri
    overrides = {}
    for item in args.set:
        path, text = parse_assignment(item, "--set", "PATH=VALUE, e.g. --set train.epochs=5")
        try:
            overrides[path] = json.loads(text)
        except json.JSONDecodeError:
            overrides[path] = text  # a bare word is a string: --set data.path=s3://bucket/new
    result = run_task(
        args.name, args.config, inputs, args.output, overwrite=args.overwrite, overrides=overrides,
        result_file=args.result,
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def add_report(sub) -> None:
    parser = sub.add_parser(
        "report",
        help="write a run's summary.json, report.md and report.html from its validations (the orchestrators' report task)",
        formatter_class=Formatter,
        epilog=textwrap.dedent(
            """\
            example:
              modelpress report --name digits --output s3://runs/digits/42 \\
                  --validation s3://runs/digits/42/validation/train --validation s3://runs/digits/42/validation/onnx
            """
        ),
    )
    parser.add_argument("--name", required=True, help="the workflow's name, the report's title")
    parser.add_argument("--output", required=True, help="the run's folder or s3:// prefix the report files go to")
    parser.add_argument("--validation", action="append", default=[], metavar="URI", help="a validate output (repeatable)")
    parser.add_argument("--result", help="also write the result JSON to this file")
    parser.set_defaults(handler=cmd_report)


def cmd_report(args) -> int:
    from modelpress.execution.runner import report_validations

    if not args.validation:
        raise UserError("modelpress report needs at least one --validation URI (a validate step's output)")
    summary = report_validations(args.name, args.validation, args.output)
    result = {"uri": args.output, "artifacts": len(summary["artifacts"]), "blessed": summary["blessed"]}
    if args.result:
        with open(args.result, "w") as handle:
            json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return 0


def add_steps(sub) -> None:
    parser = sub.add_parser("steps", help="list the registered steps, their inputs, image and config keys")
    parser.set_defaults(handler=cmd_steps)


def cmd_steps(args) -> int:
    from modelpress.steps.catalog import STEPS

    for name, step in STEPS.items():
        inputs = ", ".join([*step.inputs, *(f"[{o}]" for o in step.optional_inputs)]) or "-"
        print(f"{name:<10} {step.description}")
        print(f"{'':<10} inputs: {inputs}; output: {step.output}; image: {step.placement.image()}{'; gpu' if step.gpu else ''}")
        print(f"{'':<10} config keys: {', '.join(step.config.model_fields)}")
    return 0


COMPILERS_GROUP = "modelpress.compilers"


def add_compile(sub) -> None:
    parser = sub.add_parser(
        "compile",
        help="compile workflows for Kubeflow Pipelines (IR YAML) or Airflow (the DAGs folder)",
        formatter_class=Formatter,
        description=textwrap.dedent(
            """\
            kfp:     write the pipeline a user uploads in the Kubeflow UI (one IR YAML per workflow).
            airflow: check that each workflow builds a DAG and copy it into the DAGs folder's workflows/ (the DAG id
                     is the file name). Both fail on a workflow that does not validate, naming file and key.
            """
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              modelpress compile kfp examples/digits_mlp.yaml -o pipeline.yaml
              modelpress compile kfp examples/*.yaml -o pipelines/compiled/     refresh the compiled examples
              modelpress compile airflow my-model.yaml -o dags/workflows/
            """
        ),
    )
    parser.add_argument("target", choices=["kfp", "airflow"], help="the orchestrator")
    parser.add_argument("workflows", nargs="+", metavar="WORKFLOW", help="workflow YAML file(s)")
    parser.add_argument(
        "-o", "--output", help="kfp: a .yaml file (one workflow) or a folder; airflow: the workflows folder (default: ./dags/workflows)"
    )
    parser.set_defaults(handler=cmd_compile)


def cmd_compile(args) -> int:
    """The orchestrator adapters register their compile commands as `modelpress.compilers` entry points."""
    from importlib.metadata import entry_points

    found = {point.name: point for point in entry_points(group=COMPILERS_GROUP)}
    if args.target not in found:
        raise UserError(f"no '{args.target}' compiler is installed; reinstall modelpress (pip install -e .)")
    return found[args.target].load()(args.workflows, args.output)


COMMANDS_GROUP = "modelpress.commands"


def adapter_command(name: str) -> Callable:
    """A command an orchestrator adapter registers as a `modelpress.commands` entry point."""
    from importlib.metadata import entry_points

    found = {point.name: point for point in entry_points(group=COMMANDS_GROUP)}
    if name not in found:
        raise UserError(f"the '{name}' command is not installed; reinstall modelpress (pip install -e .)")
    return found[name].load()


def add_upload(sub) -> None:
    parser = sub.add_parser(
        "upload",
        help="compile a workflow and upload it to Kubeflow Pipelines as a pipeline or a new version",
        formatter_class=Formatter,
        description=textwrap.dedent(
            """\
            Compile the workflow (as `compile kfp`) and upload it through the KFP API: a new pipeline named after the
            workflow, else a new version named <workflow>-<first 12 hex of the workflow spec's sha256>. A workflow
            whose spec the pipeline already has a version of uploads nothing and says so.
            """
        ),
        epilog="example:\n  modelpress upload examples/digits_mlp.yaml --host http://localhost:8888 --namespace team-ml",
    )
    parser.add_argument("workflow", help="workflow YAML file")
    parser.add_argument("--host", required=True, help="the KFP API address, e.g. http://ml-pipeline-ui.kubeflow:80")
    parser.add_argument("--namespace", help="the profile namespace of a multi-user Kubeflow (default: shared pipelines)")
    parser.set_defaults(handler=cmd_upload)


def cmd_upload(args) -> int:
    return adapter_command("upload")(args.workflow, args.host, args.namespace)


def add_new(sub) -> None:
    from modelpress.cli.newflow import TEMPLATES

    parser = sub.add_parser(
        "new",
        help="write a commented workflow YAML from a template",
        formatter_class=Formatter,
        description="Write NAME.yaml from a template: every section commented, valid for `modelpress check`,\n"
        "and a DAG as soon as it is copied into dags/workflows/. Templates:\n"
        + "\n".join(f"  {name:<18} {text}" for name, (text, _) in TEMPLATES.items()),
        epilog="example:\n  modelpress new fraud-detector --from tabular-mlp -o dags/workflows/",
    )
    parser.add_argument("name", help="workflow name: lower-case letters, digits, '-' or '_' (also the DAG id)")
    parser.add_argument("--from", dest="template", default="image-classifier", help="template (default: image-classifier)")
    parser.add_argument("-o", "--output", default=".", help="folder to write NAME.yaml into (default: .)")
    parser.add_argument("--overwrite", action="store_true", help="replace NAME.yaml if it exists")
    parser.set_defaults(handler=cmd_new)


def cmd_new(args) -> int:
    from pathlib import Path

    from modelpress.cli.newflow import write_workflow

    path = write_workflow(args.name, args.template, Path(args.output), overwrite=args.overwrite)
    print(f"wrote {path}; next: modelpress check {path}")
    return 0


def registry_uri(uri: str | None) -> str:
    import os

    uri = uri or os.environ.get("MODELPRESS_REGISTRY")
    if not uri:
        raise UserError("no registry given; pass --uri s3://bucket/prefix (or a folder) or set MODELPRESS_REGISTRY")
    return uri


def add_registry(sub) -> None:
    parser = sub.add_parser(
        "registry",
        help="list a model's published versions, show one version's manifest, or their history",
        formatter_class=Formatter,
        description="The registry push publishes to: <uri>/<model>/<version>/ release bundles (manifest.json,\n"
        "MODEL_CARD.md, every blessed artifact) and <uri>/<model>/labels/<label>.json pointers.",
        epilog=textwrap.dedent(
            """\
            examples:
              modelpress registry list digits-mlp --uri runs/demo/registry
              modelpress registry show digits-mlp 3 --uri s3://models/registry
              modelpress registry gc digits-mlp --uri s3://models/registry           dry run; --delete removes
              modelpress registry history digits-mlp --uri s3://models/registry --plot accuracy.png
            """
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="versions, newest last, with labels and accuracy")
    listing.add_argument("model")
    show = actions.add_parser("show", help="one version's manifest (JSON) or model card")
    show.add_argument("model")
    show.add_argument("version", type=int)
    show.add_argument("--card", action="store_true", help="print the model card (markdown) instead of the manifest")
    from modelpress.steps.push.gc import add_arguments as add_gc_arguments

    gc = actions.add_parser("gc", help="list (dry run) or --delete what interrupted pushes left")
    add_gc_arguments(gc)
    from modelpress.steps.push.history import add_arguments as add_history_arguments

    history = actions.add_parser(
        "history", help="accuracy, size and latency per release and artifact; flags the newest release's regressions"
    )
    add_history_arguments(history)
    for action in (listing, show):
        action.add_argument("--uri", help="registry: s3://bucket/prefix or folder (default: $MODELPRESS_REGISTRY)")
    parser.set_defaults(handler=cmd_registry)


def cmd_registry(args) -> int:
    from modelpress.io import releases, storage

    storage.configure(None)
    root = registry_uri(args.uri)
    if args.action == "gc":
        from modelpress.steps.push.gc import cmd_gc

        return cmd_gc(args, root)
    if args.action == "history":
        from modelpress.steps.push.history import cmd_history

        return cmd_history(args, root)
    if args.action == "show":
        manifest = releases.read_manifest(root, args.model, args.version)
        if args.card:
            print(storage.read_bytes(storage.join(releases.version_uri(root, args.model, args.version), releases.MODEL_CARD_FILE)).decode())
        else:
            print(json.dumps(manifest, indent=2))
        return 0
    versions = releases.list_versions(root, args.model)
    if not versions:
        raise UserError(f"model '{args.model}' has no published versions in {root}; run push first or check --uri")
    labels = releases.labels_by_version(root, args.model)
    rows = [["version", "created", "digest", "accuracy", "artifacts", "labels"]]
    for version in versions:
        manifest = releases.read_manifest(root, args.model, version)
        entries = {e["name"]: e for e in manifest["artifacts"]}
        serving = entries.get(manifest.get("serving_artifact")) or next(iter(entries.values()))
        accuracy = serving["metrics"].get("accuracy")
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        rows.append([str(version), manifest["created"], manifest["digest"][:12], shown, ", ".join(entries), ", ".join(labels.get(version, []))])
    print("\n".join(aligned(rows, right={0, 3})))
    return 0


def aligned(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows as lines with every column as wide as its widest cell, the columns in `right` right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def serving_arguments(parser) -> None:
    parser.add_argument("model", help="model name")
    parser.add_argument("--base-path", required=True, help="the model base path TF Serving polls (folder or s3://)")
    parser.add_argument("--mount-path", help="the base path as the TF Serving container sees it (default: --base-path)")
    parser.add_argument("--grpc-address", help="host:port of TF Serving's gRPC API (unset: write files only)")
    parser.add_argument("--rest-address", help="http://host:port of TF Serving's REST API (status and Predict)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a version to be AVAILABLE")


def serving_spec(args, **extra):
    from pydantic import ValidationError

    from modelpress.contract.publishing import ServingSpec
    from modelpress.contract.yaml_input import describe_validation_error

    values = {
        "model_name": args.model, "base_path": args.base_path, "mount_path": args.mount_path,
        "grpc_address": args.grpc_address, "rest_address": args.rest_address, "timeout_s": args.timeout, **extra,
    }
    try:
        return ServingSpec.model_validate(values)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, values, "arguments", None)) from None


def add_deploy(sub) -> None:
    parser = sub.add_parser(
        "deploy",
        help="deploy a published release to TF Serving (canary, smoke Predict, then stable)",
        formatter_class=Formatter,
        description=textwrap.dedent(
            """\
            Copy a release's SavedModel to <base-path>/<model>/<version>/ (the release's number), then, with a
            server address, reload TF Serving's config, wait for the version to be AVAILABLE, label it canary,
            compare its Predict answers on the validated golden rows, and move the stable label to it.
            Without an address, write the base path and models.config for a TF Serving container to mount.
            """
        ),
        epilog="example:\n  modelpress deploy digits-mlp --registry runs/demo/registry --label current \\\n"
        "      --base-path /srv/models --grpc-address localhost:8500",
    )
    serving_arguments(parser)
    parser.add_argument("--registry", help="registry URI (default: $MODELPRESS_REGISTRY)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="release version (default: the newest)")
    which.add_argument("--label", help="release label, e.g. current")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest difference allowed from the validated outputs")
    parser.set_defaults(handler=cmd_deploy)


def cmd_deploy(args) -> int:
    from modelpress.io import storage
    from modelpress.steps.deploy.step import deploy_release

    storage.configure(None)
    spec = serving_spec(args, tolerance=args.tolerance)
    print(json.dumps(deploy_release(spec, args.base_path, registry_uri(args.registry), args.version, args.label), indent=2))
    return 0


def add_rollback(sub) -> None:
    parser = sub.add_parser(
        "rollback",
        help="move a model's stable label back to the version it pointed at before",
        formatter_class=Formatter,
        description="Move `stable` back (or --to a version still in the base path). With a server address the\n"
        "version is loaded and AVAILABLE before the label moves; models.config is rewritten either way.",
        epilog="example:\n  modelpress rollback digits-mlp --base-path /srv/models --grpc-address localhost:8500",
    )
    serving_arguments(parser)
    parser.add_argument("--to", type=int, help="the version to make stable (default: the previous stable one)")
    parser.set_defaults(handler=cmd_rollback)


def cmd_rollback(args) -> int:
    from modelpress.io import storage
    from modelpress.steps.deploy.step import rollback

    storage.configure(None)
    print(json.dumps(rollback(serving_spec(args), args.base_path, args.to), indent=2))
    return 0


def add_images(sub) -> None:
    # The builder has its own parser (image_build.main, also behind containers/build.py): main() hands it the rest
    # of the command line; this entry lists the command in `modelpress --help`.
    sub.add_parser("images", help="build the container images, or derive them with a team's builder package", add_help=False)


def cmd_images(arguments: list[str]) -> int:
    from modelpress.kubernetes.image_build import main as build_images

    return build_images(arguments)


# Subcommands other modules add (compile, new, registry, deploy, rollback) register here with the same shape.
COMMANDS: list[Callable] = [
    add_run, add_check, add_step, add_report, add_steps, add_compile, add_upload, add_new, add_registry, add_deploy, add_rollback, add_images
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpress",
        formatter_class=Formatter,
        description="ModelPress: train, compress, convert, validate and publish TensorFlow models.",
        epilog=EPILOG,
    )
    from modelpress import __version__

    parser.add_argument("--version", action="version", version=f"modelpress {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = None if argv[:1] == ["images"] else parser.parse_args(argv)
    if args is not None and not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        code = cmd_images(argv[1:]) if args is None else args.handler(args)
        sys.stdout.flush()  # inside the try: a reader that went away shows here, not as an error at exit
        return code
    except UserError as exc:
        print(f"modelpress: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modelpress: interrupted; outputs are staged, so nothing half-written was left in place", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stays open until exit: the interpreter flushes it)
        return 0

