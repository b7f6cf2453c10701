"""User-facing errors: one line that names what is wrong and how to fix it."""


class UserError(Exception):
    """A mistake in the user's input (spec, data, paths, credentials). The CLI prints it as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, keys: tuple = ()):
        super().__init__(" ".join(message.split()))
        self.keys = keys  # where in the workflow file the mistake is, e.g. ("compress", 1), when it is there


class StepFailed(UserError):
    """A step ran but its result must not be used (e.g. a conversion that disagrees with its parent)."""

    exit_code = 3


class BackendMissing(UserError):
    """An optional dependency set is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed; install it with: pip install 'modelpress[{extra}]'")


def require(module: str, extra: str):
    """Import an optional heavy backend, or fail with the install command that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendMissing(module, extra) from exc
