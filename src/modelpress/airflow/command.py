"""`modelpress compile airflow`: found by the CLI through the `modelpress.compilers` entry point, so the core never
imports Airflow; Airflow itself is imported only once the command runs."""

from __future__ import annotations

from pathlib import Path

from modelpress.common.errors import UserError, require

DEFAULT_WORKFLOWS_DIR = Path("dags/workflows")  # relative to where the command runs: a DAG repository's checkout


def compile_command(workflows: list[str], output: str | None) -> int:
    """Check that each workflow builds its DAG, then copy it into the DAG folder's workflows/ (the DAG id is the
    workflow file's name)."""
    try:  # what the adapter imports: a half-removed airflow package must not pass for an installed one
        require("airflow.providers.cncf.kubernetes.operators.pod", "airflow")
    except UserError:
        raise UserError(
            "Airflow is not installed here; kfp cannot share its environment, so install it in a venv of its own: "
            "pip install -c constraints-airflow.txt 'modelpress[airflow]' (make does this in .venv-airflow)"
        ) from None
    from modelpress.airflow.dag_factory import install_workflow

    folder = Path(output) if output else DEFAULT_WORKFLOWS_DIR
    for workflow in workflows:
        dag, spec, written = install_workflow(Path(workflow), folder)
        triggers = " or ".join(filter(None, [spec.schedule, spec.asset and f"updates of {spec.asset}"])) or "manual"
        print(f"{workflow} -> {written}: DAG '{dag.dag_id}' ({triggers}), tasks {', '.join(dag.task_ids)}")
    return 0
