"""The Kubeflow adapter. `modelpress.kfp.step` (reusable.py) puts one step into a team's own pipeline; it is loaded
on first use, so importing the package (the CLI's compile entry point) does not import kfp."""


def __getattr__(name: str):
    if name == "step":
        from modelpress.kfp.reusable import step

        return step
    raise AttributeError(f"module 'modelpress.kfp' has no attribute '{name}'")
