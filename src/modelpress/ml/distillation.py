"""Knowledge distillation shared by the steps that train a model on a teacher's softened logits (distill, and
structured prune's fine-tuning with the unpruned model as teacher).

Loss = alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)), computed
on the `logits` layer every zoo model has.
"""

from __future__ import annotations

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf

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
