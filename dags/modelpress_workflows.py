"""Airflow DAG file: one DAG per workflow YAML in dags/workflows/ (DAG id = the file name without .yaml).

Drop a workflow written with `modelpress new` into dags/workflows/ and it becomes a DAG. A workflow that does not
validate shows up as an import error naming that file; the other workflows' DAGs still load.
"""

from dags.modelpress_airflow import workflow_dags

globals().update(workflow_dags())
