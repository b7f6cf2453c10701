"""`modelpress compile kfp`: found by the CLI through the `modelpress.compilers` entry point, so the core never imports
kfp; kfp itself is imported only once the command runs."""

from __future__ import annotations

from pathlib import Path

from modelpress.common.errors import UserError, require


def compile_command(workflows: list[str], output: str | None) -> int:
    """One IR YAML per workflow: into `output` when it is a .yaml file (one workflow), else into the folder."""
    require("kfp", "kfp")
    from modelpress.kfp.compiler import compile_workflow

    if not output:
        raise UserError("compile kfp needs -o FILE.yaml (one workflow) or -o FOLDER/")
    target = Path(output)
    single_file = target.suffix in (".yaml", ".yml") and not target.is_dir()
    if single_file and len(workflows) > 1:
        raise UserError(f"-o {target} is a file but {len(workflows)} workflows were given; pass a folder")
    for workflow in workflows:
        written = compile_workflow(workflow, target if single_file else target / Path(workflow).with_suffix(".yaml").name)
        print(f"{workflow} -> {written}")
    return 0
