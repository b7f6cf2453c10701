"""Knowledge distillation, for every step that trains a model from a teacher (the distill step; a pruned model
recovering with its unpruned parent as teacher).

Loss on a batch: alpha * CE(labels, student) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
both models read at their `logits` layer. With mixup, each batch is first blended with a shuffled copy of itself
(weights drawn from Beta(m, m)); the labels blend the same way and the teacher labels the blends, so the student
learns the teacher's function between the training examples, where the labels alone say nothing.
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


def distiller(student, teacher, temperature: float, alpha: float, mixup: float = 0.0, seed: int = 0):
    """A model that predicts like the student (so validation accuracy and early stopping work unchanged) but trains
    the student on the distillation loss, on batches of (inputs, integer labels). The teacher is frozen.
    `mixup` > 0 is the Beta parameter of the blends (0.2-1; larger blends more evenly); 0 trains on the batches as
    they come."""
    tf, keras = import_tf()
    student_logits = logits_model(student, "student")
    teacher_logits = logits_model(teacher, "teacher")
    teacher_logits.trainable = False
    num_classes = int(student_logits.output.shape[-1])

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__(name="distiller")
            self.student, self.teacher = student, teacher_logits
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.blend_seeds = tf.random.Generator.from_seed(seed)

        @property
        def metrics(self):
            # The logged loss is the distillation loss, in training and validation alike (not the compiled label loss).
            return [self.loss_tracker, *(self.compiled_metrics.metrics if self.compiled_metrics else [])]

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def blend(self, inputs, labels):
            """Each example mixed with another of the batch: the blended inputs, their blended one-hot targets, and
            the label of the larger part (for the training accuracy)."""
            targets = tf.one_hot(labels, num_classes)
            if mixup <= 0:
                return inputs, targets, labels
            size = tf.shape(inputs)[0]
            # Beta(m, m) as the ratio of two Gamma(m) draws (TensorFlow has no Beta sampler).
            draws = tf.random.stateless_gamma([2, size], self.blend_seeds.make_seeds(1)[:, 0], alpha=mixup)
            share = draws[0] / (draws[0] + draws[1])
            partner = tf.random.experimental.stateless_shuffle(tf.range(size), self.blend_seeds.make_seeds(1)[:, 0])
            weight = tf.reshape(share, [-1] + [1] * (len(inputs.shape) - 1))
            mixed = weight * inputs + (1 - weight) * tf.gather(inputs, partner)
            targets = share[:, None] * targets + (1 - share[:, None]) * tf.gather(targets, partner)
            return mixed, targets, tf.where(share >= 0.5, labels, tf.gather(labels, partner))

        def distillation_loss(self, inputs, targets, training: bool):
            soft_targets = tf.nn.softmax(tf.cast(self.teacher(inputs, training=False), tf.float32) / temperature)
            logits = tf.cast(student_logits(inputs, training=training), tf.float32)
            probabilities = tf.nn.softmax(logits)
            hard = keras.losses.categorical_crossentropy(targets, probabilities)
            soft = keras.losses.kl_divergence(soft_targets, tf.nn.softmax(logits / temperature))
            return tf.reduce_mean(alpha * hard + (1 - alpha) * temperature**2 * soft), probabilities

        def record(self, loss, probabilities, labels):
            self.loss_tracker.update_state(loss)
            self.compiled_metrics.update_state(labels, probabilities)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, batch):
            inputs, labels = batch
            inputs, targets, labels = self.blend(inputs, tf.cast(labels, tf.int32))
            with tf.GradientTape() as tape:
                loss, probabilities = self.distillation_loss(inputs, targets, training=True)
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return self.record(loss, probabilities, labels)

        def test_step(self, batch):
            inputs, labels = batch
            labels = tf.cast(labels, tf.int32)
            return self.record(*self.distillation_loss(inputs, tf.one_hot(labels, num_classes), training=False), labels)

    return Distiller()
