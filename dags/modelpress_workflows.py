"""Airflow DAG file: one DAG per workflow YAML in the workflows/ folder beside it (DAG id = the file name without
.yaml; MODELPRESS_WORKFLOWS_DIR names another folder). Copy this file and that folder into your DAGs folder.

Drop a workflow written with `modelpress new` into workflows/ and it becomes a DAG. A workflow that does not
validate shows up as an import error naming that file; the other workflows' DAGs still load.
"""

from pathlib import Path

from modelpress.airflow.dag_factory import workflow_dags

globals().update(workflow_dags(default=Path(__file__).parent / "workflows"))
