"""distill: train a smaller student on the teacher's softened logits plus the labels, and the same student from
scratch (same seed, same epochs), so the artifact records what distillation gained rather than assuming it.

Loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)), computed
on the `logits` layer every zoo model has; the saved student outputs probabilities like any other artifact.
"""

from __future__ import annotations

from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io import storage
from modelpress.io.data import load_dataset
from modelpress.ml.compression import parent_model, save_compressed
from modelpress.ml.distillation import distiller
from modelpress.ml.models import build_model
from modelpress.ml.training import fit, test_accuracy
from modelpress.steps.distill.config import DistillConfig


def train_student(config: DistillConfig, data, teacher=None):
    """The student, seeded the same way for both runs; distilled from `teacher` when given, else from the labels alone."""
    _, keras = import_tf()
    training = config.student_training()
    keras.utils.set_random_seed(training.seed)
    student = build_model(config.student, data.input_shape, data.num_classes)
    if teacher is None:
        history = fit(student, data, training, label="distill (scratch student)")
    else:
        history = fit(distiller(student, teacher, config.temperature, config.alpha), data, training, label="distill")
    return student, len(history.history["loss"])


def gap_recovered(teacher: float, scratch: float, student: float) -> float | None:
    """Share of the teacher-vs-scratch accuracy gap the distilled student closes; None when there is no gap."""
    gap = teacher - scratch
    return round((student - scratch) / gap, 4) if gap > 0 else None


def run(config: DistillConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    import_tf()
    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    with parent_model(inputs["model"], "distill", config.model) as (teacher, meta, _):
        teacher_accuracy = test_accuracy(teacher, data)
        student_params = build_model(config.student, data.input_shape, data.num_classes).count_params()
        log(
            f"distill: teacher {teacher.name} {teacher.count_params():,} parameters (test accuracy {teacher_accuracy:.4f}) "
            f"-> student {config.student.zoo or config.student.builder} {student_params:,} parameters, "
            f"T={config.temperature}, alpha={config.alpha}"
        )
        if student_params >= teacher.count_params():
            log(
                f"warning: the student ({student_params:,} parameters) is not smaller than the teacher "
                f"({teacher.count_params():,}); distilling anyway, but the artifact will not be smaller"
            )
        student, epochs_run = train_student(config, data, teacher)
    scratch, scratch_epochs = train_student(config, data)
    scratch_accuracy = test_accuracy(scratch, data)
    student_accuracy = test_accuracy(student, data)
    recovered = gap_recovered(teacher_accuracy, scratch_accuracy, student_accuracy)
    log(
        f"distill: teacher {teacher_accuracy:.4f}, student from scratch {scratch_accuracy:.4f}, distilled student "
        f"{student_accuracy:.4f}; gap recovered "
        + (f"{recovered:.0%}" if recovered is not None else "n/a (the scratch student already matches the teacher)")
    )
    comparison = {
        "teacher_accuracy": teacher_accuracy,
        "scratch_accuracy": scratch_accuracy,
        "student_accuracy": student_accuracy,
        "gap_recovered": recovered,
    }
    return save_compressed(
        student,
        technique="distill",
        config=config,
        parent_uri=inputs["model"],
        data=data,
        output=output,
        overwrite=overwrite,
        metrics=comparison,
        details={
            **comparison,
            "parent_accuracy": meta.metrics.get("accuracy"),
            "teacher_params": teacher.count_params(),
            "student_params": student.count_params(),
            "student_larger_than_teacher": student_params >= teacher.count_params(),
            "student": config.student.model_dump(),
            "temperature": config.temperature,
            "alpha": config.alpha,
            "epochs_run": {"distilled": epochs_run, "scratch": scratch_epochs},
        },
    )
