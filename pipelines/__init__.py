"""Kubeflow Pipelines v2 adapter: one component per registered step, one pipeline per workflow (see compiler.py)."""
