"""distill: train a smaller student from the teacher (ml/distillation.py: softened logits plus labels, on a mixup
transfer set) and the same student from scratch (same seed, same epochs), so the artifact records what distillation
gained rather than assuming it.

Temperature, alpha and mixup the config leaves unset are chosen on the validation split by short trials: the default
stays unless a trial is clearly better there. The choice then trains fully. The student handed on is by default never
worse on validation than the one trained from scratch.
"""

from __future__ import annotations

import math

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io import storage
from modelpress.io.data import load_dataset
from modelpress.ml.compression import parent_model, save_compressed
from modelpress.ml.distillation import distiller
from modelpress.ml.models import build_model
from modelpress.ml.training import fit, test_accuracy
from modelpress.steps.distill.config import DistillConfig, Settings

CLEARLY_BETTER = 2.0  # standard errors a trial must win by to replace the default


def validation_scores(model, data) -> tuple[np.ndarray, float]:
    """Which validation examples the model gets right, and its mean cross-entropy there (which ranks models of equal
    accuracy)."""
    tf, keras = import_tf()
    correct, loss = [], 0.0
    with data.errors():
        for inputs, labels in data.batches("val", 512):
            probabilities = model(inputs, training=False)
            correct.append((tf.argmax(probabilities, axis=1) == tf.cast(labels, tf.int64)).numpy())
            loss += float(tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, probabilities)))
    correct = np.concatenate(correct)
    return correct, loss / len(correct)


def clearly_better(challenger: np.ndarray, incumbent: np.ndarray) -> bool:
    """Whether one model's validation accuracy beats another's by more than CLEARLY_BETTER standard errors of the
    paired per-example difference. A validation split of a few hundred examples separates settings by a handful of
    examples, mostly noise: a setting that merely scores higher would be chosen by chance."""
    difference = challenger.astype(float) - incumbent.astype(float)
    if len(difference) < 2:
        return False
    return float(difference.mean()) > CLEARLY_BETTER * float(difference.std(ddof=1)) / math.sqrt(len(difference))


def train_student(config: DistillConfig, data, training, teacher=None, settings: Settings | None = None,
                  label: str = "distill"):
    """The student, seeded the same way for every run; distilled from `teacher` with `settings` when given, else
    trained on the labels alone. Returns it and the epochs it ran."""
    _, keras = import_tf()
    keras.utils.set_random_seed(training.seed)
    student = build_model(config.student, data.input_shape, data.num_classes)
    model = student if teacher is None else distiller(student, teacher, *settings, seed=training.seed)
    return student, len(fit(model, data, training, label=label).history["loss"])


def describe(settings: Settings) -> str:
    return f"T={settings.temperature:g}, alpha={settings.alpha:g}, mixup={settings.mixup:g}"


def choose_settings(config: DistillConfig, data, teacher) -> tuple[Settings, list[dict]]:
    """The config's settings, the unset ones chosen on the validation split by short trials: temperature and alpha
    together first (at the default mixup), then mixup for the winning pair. In each round the default stays unless a
    trial is clearly better (clearly_better); among those that are, the most accurate wins. Returns the settings and
    every trial's scores."""
    training = config.trial_training()
    scores: dict[Settings, tuple[np.ndarray, float, int]] = {}

    def best(candidates: list[Settings], incumbent: Settings) -> Settings:
        if len(candidates) == 1:
            return candidates[0]
        for settings in [incumbent, *(c for c in candidates if c != incumbent)]:
            if settings not in scores:
                student, epochs = train_student(config, data, training, teacher, settings, label=f"distill trial {describe(settings)}")
                scores[settings] = (*validation_scores(student, data), epochs)
        better = [c for c in candidates if clearly_better(scores[c][0], scores[incumbent][0])]
        return max(better, key=lambda c: (scores[c][0].mean(), -scores[c][1]), default=incumbent)

    default = config.default()
    temperature, alpha, _ = best([Settings(t, a, default.mixup) for t, a in config.loss_candidates()], default)
    chosen = best([Settings(temperature, alpha, mixup) for mixup in config.mixup_candidates()], Settings(temperature, alpha, default.mixup))
    if scores:
        accuracy = scores[chosen][0].mean()
        verdict = ("the default: no trial was clearly better" if chosen == default
                   else f"clearly better than the default {describe(default)} ({scores[default][0].mean():.4f})")
        log(f"distill: {describe(chosen)} chosen on validation (accuracy {accuracy:.4f}), {verdict}; {len(scores)} trials of "
            f"{training.epochs} epoch{'s' if training.epochs > 1 else ''}")
    trials = [{**settings._asdict(), "val_accuracy": float(correct.mean()), "val_loss": loss, "epochs": epochs}
              for settings, (correct, loss, epochs) in scores.items()]
    return chosen, trials


def gap_recovered(teacher: float, scratch: float, student: float) -> float | None:
    """Share of the teacher-vs-scratch accuracy gap the distilled student closes; None when there is no gap."""
    gap = teacher - scratch
    return round((student - scratch) / gap, 4) if gap > 0 else None


def check_validation_split(config: DistillConfig, data) -> None:
    """Choosing settings and the fallback both compare students on the validation split: it must hold examples."""
    if data.count("val"):
        return
    unset = config.chosen_on_validation()
    if unset:
        raise UserError(
            f"distill chooses {', '.join(unset)} on the validation split, which is empty; set data.split.val "
            f"(e.g. 0.1), or set {', '.join(unset)}"
        )
    if config.fallback_to_scratch:
        raise UserError(
            "distill compares the distilled and the scratch student on the validation split, which is empty; set "
            "data.split.val (e.g. 0.1), or set fallback_to_scratch: false"
        )


def run(config: DistillConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    import_tf()
    storage.check_output(output, overwrite)
    data = load_dataset(config.data)
    check_validation_split(config, data)
    with_validation = data.count("val") > 0
    training = config.student_training()

    def accuracies(model) -> dict[str, float | None]:
        return {"val": float(validation_scores(model, data)[0].mean()) if with_validation else None, "test": test_accuracy(model, data)}

    with parent_model(inputs["model"], "distill", config.model) as (teacher, meta, _):
        teacher_params = teacher.count_params()
        student_params = build_model(config.student, data.input_shape, data.num_classes).count_params()
        log(
            f"distill: teacher {teacher.name} {teacher_params:,} parameters -> student "
            f"{config.student.zoo or config.student.builder} {student_params:,} parameters"
        )
        if student_params >= teacher_params:
            log(
                f"warning: the student ({student_params:,} parameters) is not smaller than the teacher "
                f"({teacher_params:,}); distilling anyway, but the artifact will not be smaller"
            )
        settings, trials = choose_settings(config, data, teacher)
        distilled, distilled_epochs = train_student(config, data, training, teacher, settings, label=f"distill {describe(settings)}")
        measured = {"teacher": accuracies(teacher), "distilled": accuracies(distilled)}
    scratch, scratch_epochs = train_student(config, data, training, label="distill (scratch student)")
    measured["scratch"] = accuracies(scratch)
    recovered = {
        split: gap_recovered(measured["teacher"][split], measured["scratch"][split], measured["distilled"][split])
        for split in ("val", "test") if measured["teacher"][split] is not None
    }
    log(
        f"distill: test accuracy: teacher {measured['teacher']['test']:.4f}, student from scratch "
        f"{measured['scratch']['test']:.4f}, distilled student {measured['distilled']['test']:.4f}; gap recovered "
        + (f"{recovered['test']:.0%}" if recovered["test"] is not None else "n/a (the scratch student already matches the teacher)")
    )
    scratch_better = with_validation and measured["scratch"]["val"] > measured["distilled"]["val"]
    if config.fallback_to_scratch and scratch_better:
        handed_on, reason = "scratch", (
            f"on validation the student from scratch scores {measured['scratch']['val']:.4f} and the distilled one "
            f"{measured['distilled']['val']:.4f}: handing on the student from scratch (fallback_to_scratch: false hands "
            "on the distilled one)"
        )
        log(f"distill: {reason}")
    else:
        handed_on, reason = "distilled", (
            "the distilled student is at least as accurate on validation as the one from scratch"
            if with_validation and not scratch_better
            else "fallback_to_scratch is off"
        )
    comparison = {
        "teacher_accuracy": measured["teacher"]["test"],
        "scratch_accuracy": measured["scratch"]["test"],
        "student_accuracy": measured["distilled"]["test"],
        "gap_recovered": recovered["test"],
        "teacher_val_accuracy": measured["teacher"]["val"],
        "scratch_val_accuracy": measured["scratch"]["val"],
        "student_val_accuracy": measured["distilled"]["val"],
        "val_gap_recovered": recovered.get("val"),
        "handed_on": handed_on,
    }
    return save_compressed(
        distilled if handed_on == "distilled" else scratch,
        technique="distill",
        config=config,
        parent_uri=inputs["model"],
        data=data,
        output=output,
        overwrite=overwrite,
        metrics=comparison,
        details={
            **comparison,
            "handed_on_reason": reason,
            "parent_accuracy": meta.metrics.get("accuracy"),
            "teacher_params": teacher_params,
            "student_params": student_params,
            "student_larger_than_teacher": student_params >= teacher_params,
            "student": config.student.model_dump(),
            **settings._asdict(),
            "chosen_on_validation": config.chosen_on_validation(),
            "default_settings": config.default()._asdict(),
            "trials": [{key: round(value, 4) for key, value in trial.items()} for trial in trials],
            "epochs_run": {"trials": sum(trial["epochs"] for trial in trials), "distilled": distilled_epochs,
                           "scratch": scratch_epochs},
        },
    )
