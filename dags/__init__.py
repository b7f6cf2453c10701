"""Airflow adapter: `modelpress_workflows.py` is the DAG file; `modelpress_airflow.py` builds the DAGs."""
