"""Distillation on real sizes: the digits small_cnn teacher (examples/digits_cnn.yaml) into small students, over
several seeds, because one seed's gain is within the noise of a few hundred test images.

For every student and seed the distill step itself trains the distilled student and the same student from scratch and
records teacher, scratch and student accuracy and the share of the gap recovered; this prints them and the mean.

    python -m bench.distill_gap [--source digits|optdigits] [--students tiny_cnn,mlp16,cnn_4_8] [--seeds 3]
        [--epochs N] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics

from modelpress.common.progress import log
from modelpress.execution.plan import load_workflow
from modelpress.steps.distill.config import DistillConfig
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
}
FIELDS = ("teacher_accuracy", "scratch_accuracy", "student_accuracy", "gap_recovered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits", choices=["digits", "optdigits"], help="data (optdigits: 1797 test images)")
    parser.add_argument("--students", default="tiny_cnn,mlp16", help=f"comma-separated, from {', '.join(STUDENTS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per student")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, help="student epochs (distilled and scratch alike); default each student's own")
    parser.add_argument("--out", default=str(WORK / "distill_gap"), help="where the artifacts go")
    args = parser.parse_args()
    workflow = load_workflow(ROOT / TEACHER_WORKFLOW)
    data = {**workflow.data.model_dump(), "source": args.source}
    settings = workflow.train.model_dump()
    teacher = f"{args.out}/{args.source}/teacher"
    config = TrainConfig.model_validate({"model": workflow.model.model_dump(), "data": data, "train": settings})
    log(f"teacher: test accuracy {train(config, {}, teacher, overwrite=True)['metrics']['accuracy']:.4f}")
    rows = []
    for name in args.students.split(","):
        student, schedule = STUDENTS[name]
        for seed in range(args.seeds):
            config = DistillConfig.model_validate(
                {"student": student, "temperature": args.temperature, "alpha": args.alpha, **schedule,
                 **({"epochs": args.epochs} if args.epochs else {}), "data": data,
                 "train": {**settings, "seed": seed}}
            )
            metrics = distill(config, {"model": teacher}, f"{args.out}/{args.source}/{name}-{seed}", overwrite=True)["metrics"]
            rows.append({"student": name, "seed": seed, "params": metrics["params"], **{k: metrics[k] for k in FIELDS}})
    print(f"{args.source}, T={args.temperature}, alpha={args.alpha}" + (f", epochs={args.epochs}" if args.epochs else ""))
    print(f"{'student':<9} {'seed':>4} {'params':>6} {'teacher':>8} {'scratch':>8} {'student':>8} {'gap recovered':>14}")
    for row in rows:
        recovered = "-" if row["gap_recovered"] is None else f"{row['gap_recovered']:.0%}"
        print(f"{row['student']:<9} {row['seed']:>4} {row['params']:>6} {row['teacher_accuracy']:>8.4f} "
              f"{row['scratch_accuracy']:>8.4f} {row['student_accuracy']:>8.4f} {recovered:>14}")
    for name in args.students.split(","):
        shares = [r["gap_recovered"] for r in rows if r["student"] == name and r["gap_recovered"] is not None]
        if shares:
            print(f"{name}: mean gap recovered {statistics.mean(shares):.0%} (sd {statistics.pstdev(shares):.0%}, "
                  f"{min(shares):.0%} to {max(shares):.0%}) over {len(shares)} seeds (target >= 50%)")


if __name__ == "__main__":
    main()
