"""What every step shares: the workflow spec, the step registry, artifacts and storage, data, report and CLI."""
