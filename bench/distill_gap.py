"""Distillation on real sizes: the digits small_cnn teacher (examples/digits_cnn.yaml) into small students, over
several seeds, because one seed's gain is within the noise of a few hundred test images.

For every student and seed the distill step itself chooses the settings left open on the validation split, trains the
distilled student and the same student from scratch, and hands on the better on validation; this prints what it
chose, both students' test and validation accuracy, the share of the teacher-vs-scratch gap the distilled student
recovered on test, which student was handed on, and the epochs each spent.

    python -m bench.distill_gap [--source digits|optdigits] [--students tiny_cnn,mlp16,cnn_4_8] [--seeds 3]
        [--epochs N] [--temperature T] [--alpha A] [--mixup M] [--schedule constant|cosine] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from modelpress.common.progress import log
from modelpress.execution.plan import load_workflow
from modelpress.steps.distill.config import DistillConfig
from modelpress.steps.distill.step import gap_recovered
from modelpress.steps.distill.step import run as distill
from modelpress.steps.train.config import TrainConfig
from modelpress.steps.train.step import run as train

from .harness import ROOT, WORK

TEACHER_WORKFLOW = "examples/digits_cnn.yaml"
# Students 20x smaller than the teacher (13,706 parameters), and their training length (distilled and scratch alike).
STUDENTS = {
    "tiny_cnn": ({"zoo": "small_cnn", "params": {"filters": [4], "dense": 8}}, {"epochs": 100}),
    "mlp16": ({"zoo": "mlp", "params": {"hidden": [16]}}, {"epochs": 150, "learning_rate": 0.005}),
    # bench.techniques' CNN student (1,034 parameters), at the workflow's 25 epochs unless --epochs is given.
    "cnn_4_8": ({"zoo": "small_cnn", "params": {"filters": [4, 8], "dense": 16}}, {"epochs": 25}),
    # The reference benchmark's student of the digits CNN (bench.recipes.STUDENTS), at the workflow's 25 epochs.
    "cnn_8_16": ({"zoo": "small_cnn", "params": {"filters": [8, 16], "dense": 32}}, {"epochs": 25}),
}
SETTINGS = ("temperature", "alpha", "mixup")


def row(name: str, seed: int, folder: str) -> dict:
    """One student's figures from its artifact.json."""
    meta = json.loads((Path(folder) / "artifact.json").read_text())
    metrics, details = meta["metrics"], meta["details"]
    handed_on = {"distilled": metrics["student_accuracy"], "scratch": metrics["scratch_accuracy"]}[metrics["handed_on"]]
    return {
        "student": name, "seed": seed, "params": metrics["params"], **{key: details[key] for key in SETTINGS},
        **{key: metrics[key] for key in ("teacher_accuracy", "scratch_accuracy", "student_accuracy", "gap_recovered",
                                         "scratch_val_accuracy", "student_val_accuracy", "handed_on")},
        "handed_on_gap_recovered": gap_recovered(metrics["teacher_accuracy"], metrics["scratch_accuracy"], handed_on),
        "epochs": details["epochs_run"],
    }


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary(name: str, shares: list[float], what: str) -> str:
    if not shares:
        return f"{name}: no gap to recover ({what})"
    spread = f"sd {statistics.stdev(shares):.0%}, " if len(shares) > 1 else ""
    return (f"{name}: mean gap recovered {statistics.mean(shares):.0%} ({spread}{min(shares):.0%} to {max(shares):.0%}) "
            f"over {len(shares)} seeds, {what} (target >= 50%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits", choices=["digits", "optdigits"], help="data (optdigits: 1797 test images)")
    parser.add_argument("--students", default="tiny_cnn,mlp16", help=f"comma-separated, from {', '.join(STUDENTS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per student")
    for setting in SETTINGS:
        parser.add_argument(f"--{setting}", type=float, help="fix it; default: chosen on the validation split")
    parser.add_argument("--epochs", type=int, help="student epochs (distilled and scratch alike); default each student's own")
    parser.add_argument("--schedule", choices=["constant", "cosine"], help="the learning-rate schedule of teacher and students; default the workflow's")
    parser.add_argument("--out", default=str(WORK / "distill_gap"), help="where the artifacts go")
    args = parser.parse_args()
    workflow = load_workflow(ROOT / TEACHER_WORKFLOW)
    data = {**workflow.data.model_dump(), "source": args.source}
    settings = {**workflow.train.model_dump(), **({"schedule": args.schedule} if args.schedule else {})}
    teacher = f"{args.out}/{args.source}/teacher-{settings['schedule']}"
    config = TrainConfig.model_validate({"model": workflow.model.model_dump(), "data": data, "train": settings})
    log(f"teacher: test accuracy {train(config, {}, teacher, overwrite=True)['metrics']['accuracy']:.4f}")
    fixed = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    rows = []
    for name in args.students.split(","):
        student, schedule = STUDENTS[name]
        for seed in range(args.seeds):
            config = DistillConfig.model_validate(
                {"student": student, **fixed, **schedule, **({"epochs": args.epochs} if args.epochs else {}),
                 "data": data, "train": {**settings, "seed": seed}}
            )
            folder = f"{args.out}/{args.source}/{name}-{seed}"
            distill(config, {"model": teacher}, folder, overwrite=True)
            rows.append(row(name, seed, folder))
    print(f"{args.source}, " + (", ".join(f"{k}={v:g}" for k, v in fixed.items()) or "settings chosen on validation")
          + (f", epochs={args.epochs}" if args.epochs else ""))
    print(f"{'student':<9} {'seed':>4} {'params':>6} {'T':>3} {'alpha':>5} {'mixup':>5} {'teacher':>8} {'scratch':>8} "
          f"{'distill':>8} {'gap rec.':>8} {'val scr.':>8} {'val dis.':>8} {'handed on':>9} {'epochs (trials+distill/scratch)':>31}")
    for r in rows:
        epochs = f"{r['epochs']['trials']}+{r['epochs']['distilled']}/{r['epochs']['scratch']}"
        print(f"{r['student']:<9} {r['seed']:>4} {r['params']:>6} {r['temperature']:>3g} {r['alpha']:>5g} {r['mixup']:>5g} "
              f"{r['teacher_accuracy']:>8.4f} {r['scratch_accuracy']:>8.4f} {r['student_accuracy']:>8.4f} "
              f"{share(r['gap_recovered']):>8} {r['scratch_val_accuracy']:>8.4f} {r['student_val_accuracy']:>8.4f} "
              f"{r['handed_on']:>9} {epochs:>31}")
    for name in args.students.split(","):
        mine = [r for r in rows if r["student"] == name]
        print(summary(name, [r["gap_recovered"] for r in mine if r["gap_recovered"] is not None], "the distilled students"))
        handed = [r["handed_on_gap_recovered"] for r in mine if r["handed_on_gap_recovered"] is not None]
        scratch = sum(r["handed_on"] == "scratch" for r in mine)
        print(summary(name, handed, f"the students handed on (scratch on {scratch} of {len(mine)} seeds)"))


if __name__ == "__main__":
    main()
