"""Helpers of the tampering and bad-input tests: re-packing an artifact after changing it, and the promise every
bad input must keep (exit 2, one line on stderr, no traceback, nothing written)."""

from __future__ import annotations

from pathlib import Path

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
