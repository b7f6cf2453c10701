"""Shared helpers of the reliability suite: copies of validated artifacts to tamper with, and the promise every
bad input must keep (exit 2, one line on stderr, no traceback, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelpress.io.artifacts import ArtifactMeta, finish


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification stamp: what "nothing written" is checked against."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(result, *phrases: str) -> str:
    """Exit 2 with exactly one line on stderr, the CLI's error line, naming every phrase; no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("modelpress: error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def refinish(folder: Path) -> None:
    """Rewrite an artifact folder's artifact.json for its current files, as a tool that re-packs artifacts would."""
    meta = ArtifactMeta.model_validate_json((folder / "artifact.json").read_text())
    (folder / "artifact.json").unlink()
    finish(folder, meta)


@pytest.fixture
def validated_copy(trained_runs, tmp_path):
    """A private copy of run `a`'s validated artifacts: {name: (artifact folder, validation folder)}, each blessing
    pointing at its copied artifact (the content digest does not depend on where an artifact is)."""
    copies = {}
    for name in ("train", "tflite_fp32"):
        artifact, validation = tmp_path / "copy" / "artifacts" / name, tmp_path / "copy" / "validation" / name
        shutil.copytree(trained_runs["a"] / "artifacts" / name, artifact)
        shutil.copytree(trained_runs["a"] / "validation" / name, validation)
        blessing = json.loads((validation / "blessing.json").read_text())
        (validation / "blessing.json").write_text(json.dumps({**blessing, "artifact": str(artifact)}))
        copies[name] = (artifact, validation)
    return copies
