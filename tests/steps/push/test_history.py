"""`modelpress registry history`: the table of every release's artifacts with their numbers, the newest release's
regressions against the releases before it, and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

# (accuracy, size_bytes, latency_ms_p50) of the SavedModel and the TFLite artifact, per release
STABLE = [
    {"train": (0.9610, 353_513, 0.250), "tflite_int8": (0.9580, 81_560, 0.0050)},
    {"train": (0.9650, 353_513, 0.240), "tflite_int8": (0.9600, 81_560, 0.0049)},
    {"train": (0.9640, 353_513, 0.260), "tflite_int8": (0.9570, 81_560, 0.0051)},
]
FORMATS = {"train": "saved_model", "tflite_int8": "tflite_int8"}


def write_registry(root: Path, model: str, releases: list[dict]) -> None:
    """Releases as push leaves them: <root>/<model>/<version>/manifest.json, versions from 1."""
    for version, artifacts in enumerate(releases, start=1):
        folder = root / model / str(version)
        folder.mkdir(parents=True)
        manifest = {
            "model": model, "version": version, "digest": f"{version:064x}", "created": f"2026-11-0{version}T10:00:00Z",
            "serving_artifact": "train",
            "artifacts": [
                {"name": name, "format": FORMATS[name],
                 "metrics": {"accuracy": accuracy, "size_bytes": size, "latency_ms_p50": latency}}
                for name, (accuracy, size, latency) in artifacts.items()
            ],
        }
        (folder / "manifest.json").write_text(json.dumps(manifest))


def history(root: Path, *options: str, cwd: Path | None = None) -> tuple[int, list[str], str]:
    """The command in its own process: what a user's terminal shows, and nothing another test's thread printed."""
    result = run_cli("registry", "history", "digits-mlp", "--uri", str(root), *options, cwd=cwd)
    return result.returncode, result.stdout.splitlines(), result.stderr


def test_the_table_holds_every_release_and_artifact_with_its_numbers(tmp_path):
    write_registry(tmp_path, "digits-mlp", STABLE)
    code, lines, err = history(tmp_path)
    assert code == 0, err
    assert lines[0].split() == ["version", "created", "artifact", "format", "accuracy", "size", "KiB", "p50", "ms"]
    rows = [line.split() for line in lines[1:7]]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (str(v), name, FORMATS[name]) for v in (1, 2, 3) for name in ("tflite_int8", "train")
    ]
    assert rows[1] == ["1", "2026-11-01T10:00:00Z", "train", "saved_model", "0.9610", "345.2", "0.250"]
    assert rows[4] == ["3", "2026-11-03T10:00:00Z", "tflite_int8", "tflite_int8", "0.9570", "79.6", "0.005"]
    assert lines[7:] == ["no regression in v3 against v1-v2"]


def test_a_planted_accuracy_drop_is_flagged_and_exits_1(tmp_path):
    dropped = {"train": (0.9640, 353_513, 0.250), "tflite_int8": (0.9480, 81_560, 0.0050)}
    write_registry(tmp_path, "digits-mlp", [*STABLE, dropped])
    code, lines, _ = history(tmp_path)
    assert code == 1
    flagged = [line for line in lines if line.startswith("REGRESSION")]
    assert flagged == [
        "REGRESSION tflite_int8 (tflite_int8) v4: accuracy 0.9480 is 0.0120 below the best of v1-v3 (0.9600; threshold 0.005)"
    ]


def test_a_drop_within_the_threshold_or_older_than_the_window_is_not_flagged(tmp_path):
    best_long_ago = {"train": (0.9900, 353_513, 0.250), "tflite_int8": (0.9590, 81_560, 0.0050)}
    newest = {"train": (0.9620, 353_513, 0.250), "tflite_int8": (0.9560, 81_560, 0.0050)}  # 0.004 below v2's 0.9600
    write_registry(tmp_path, "digits-mlp", [best_long_ago, *STABLE, newest])
    code, lines, _ = history(tmp_path)
    assert code == 0 and lines[-1] == "no regression in v5 against v2-v4"
    code, lines, _ = history(tmp_path, "--last", "4")
    assert code == 1 and [line.split()[1] for line in lines if line.startswith("REGRESSION")] == ["train"]


def test_size_and_latency_growing_more_than_10_percent_are_flagged(tmp_path):
    # train: 20% bigger, 8% slower than v2 (allowed); tflite_int8: 10.2% slower than v2
    bigger_slower = {"train": (0.9650, 424_216, 0.260), "tflite_int8": (0.9600, 81_560, 0.0054)}
    write_registry(tmp_path, "digits-mlp", [*STABLE, bigger_slower])
    code, lines, _ = history(tmp_path)
    assert code == 1
    flagged = [line for line in lines if line.startswith("REGRESSION")]
    assert len(flagged) == 2
    assert flagged == [
        "REGRESSION train (saved_model) v4: size 424,216 bytes is 20.0% above the smallest of v1-v3 (353,513 bytes; allowed 10%)",
        "REGRESSION tflite_int8 (tflite_int8) v4: latency p50 0.0054 ms is 10.2% above the smallest of v1-v3 (0.0049 ms; allowed 10%)",
    ]


def test_the_plot_is_a_png(tmp_path):
    write_registry(tmp_path, "digits-mlp", STABLE)
    code, lines, err = history(tmp_path, "--plot", str(tmp_path / "plots" / "accuracy.png"))
    assert code == 0, err
    assert (tmp_path / "plots" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {tmp_path / 'plots' / 'accuracy.png'}" in lines


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--plot", "accuracy.pdf"), "--plot accuracy.pdf must be a .png file"),
        (("--last", "0"), "--last must be at least 1"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, options, message):
    write_registry(tmp_path, "digits-mlp", STABLE)
    code, lines, err = history(tmp_path, *options, cwd=tmp_path)
    assert code == 2 and lines == [] and message in err and err.count("\n") == 1
    assert not (tmp_path / "accuracy.pdf").exists()


def test_a_model_without_releases_is_one_line(tmp_path):
    code, _, err = history(tmp_path)
    assert code == 2 and "model 'digits-mlp' has no published versions" in err


def test_a_single_release_has_nothing_to_compare(tmp_path):
    write_registry(tmp_path, "digits-mlp", STABLE[:1])
    code, lines, _ = history(tmp_path)
    assert code == 0 and len(lines) == 4 and lines[-1] == "v1 is the only release: nothing to compare it with"
