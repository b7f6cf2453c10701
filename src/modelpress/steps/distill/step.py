"""distill: train a smaller student on the teacher's softened logits plus the labels, and the same student from
scratch (same seed, same epochs), so the artifact records what distillation gained rather than assuming it.

Loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)), computed
on the `logits` layer every zoo model has; the saved student outputs probabilities like any other artifact.
"""

from __future__ import annotations

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io import storage
from modelpress.io.data import load_dataset
from modelpress.ml.compression import parent_model, save_compressed
from modelpress.ml.models import build_model
from modelpress.ml.training import fit, test_accuracy
from modelpress.steps.distill.config import DistillConfig

LOGITS_LAYER = "logits"


def logits_model(model, role: str):
    """The model up to its `logits` layer (sharing its weights): distillation compares logits, not probabilities."""
    _, keras = import_tf()
    names = [layer.name for layer in model.layers]
    if LOGITS_LAYER not in names:
        raise UserError(
            f"distill: the {role} model {model.name} has no layer named '{LOGITS_LAYER}' (its layers: {', '.join(names[-3:])}); "
            "end it with Dense(num_classes, name='logits') then a softmax, as the zoo models do"
        )
    return keras.Model(model.inputs, model.get_layer(LOGITS_LAYER).output, name=f"{model.name}_{LOGITS_LAYER}")


def distiller(student, teacher, temperature: float, alpha: float):
    """A model that predicts like the student (so validation accuracy and early stopping work unchanged) but trains
    the student on the distillation loss. The teacher is frozen."""
    tf, keras = import_tf()
    student_logits = logits_model(student, "student")
    teacher_logits = logits_model(teacher, "teacher")
    teacher_logits.trainable = False

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__(name="distiller")
            self.student, self.teacher = student, teacher_logits
            self.loss_tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            # The logged loss is the distillation loss, in training and validation alike (not the compiled label loss).
            return [self.loss_tracker, *(self.compiled_metrics.metrics if self.compiled_metrics else [])]

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def distillation_loss(self, inputs, labels, training: bool):
            soft_targets = tf.nn.softmax(tf.cast(self.teacher(inputs, training=False), tf.float32) / temperature)
            logits = tf.cast(student_logits(inputs, training=training), tf.float32)
            probabilities = tf.nn.softmax(logits)
            hard = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
            soft = keras.losses.kl_divergence(soft_targets, tf.nn.softmax(logits / temperature))
            return tf.reduce_mean(alpha * hard + (1 - alpha) * temperature**2 * soft), probabilities

        def record(self, loss, probabilities, labels):
            self.loss_tracker.update_state(loss)
            self.compiled_metrics.update_state(labels, probabilities)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, batch):
            inputs, labels = batch
            with tf.GradientTape() as tape:
                loss, probabilities = self.distillation_loss(inputs, labels, training=True)
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return self.record(loss, probabilities, labels)

        def test_step(self, batch):
            inputs, labels = batch
            return self.record(*self.distillation_loss(inputs, labels, training=False), labels)

    return Distiller()


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
