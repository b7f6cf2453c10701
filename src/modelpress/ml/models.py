"""The model zoo and user builders. Every model starts with an explicit keras.Input (quantize_model needs it) and
ends with a `logits` Dense layer followed by a `probabilities` softmax, so distillation can read the logits."""

from __future__ import annotations

import difflib
import importlib
import inspect

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf
from modelpress.contract.training import ModelSpec


def _head(keras, features, num_classes: int):
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.layers.Activation("softmax", name="probabilities", dtype="float32")(logits)


def mlp(input_shape, num_classes: int, hidden: tuple[int, ...] | list[int] = (300, 150)):
    """The 300-150 fully connected net of the lottery-ticket experiments (LeNet-300-100's sibling)."""
    _, keras = import_tf()
    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), activation="relu", name=f"dense_{i + 1}")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="mlp")


def small_cnn(input_shape, num_classes: int, filters: tuple[int, ...] | list[int] = (16, 32), dense: int = 64):
    """Two 3x3 conv blocks and a dense layer: small enough for 8x8 digits, big enough to compress."""
    _, keras = import_tf()
    if len(input_shape) != 3:
        raise UserError(f"small_cnn needs images (H, W, C); the data has shape {tuple(input_shape)}: set data.shape")
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for i, count in enumerate(filters):
        x = keras.layers.Conv2D(int(count), 3, padding="same", activation="relu", name=f"conv_{i + 1}")(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(int(dense), activation="relu", name="dense_1")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="small_cnn")


def mobilenet_v2(input_shape, num_classes: int, alpha: float = 1.0, input_size: int | None = None):
    """MobileNetV2 from scratch (no downloaded weights). With input_size, images are resized inside the model."""
    _, keras = import_tf()
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise UserError(f"mobilenet_v2 needs RGB images (H, W, 3); the data has shape {tuple(input_shape)}: set data.channels: 3")
    if alpha not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        raise UserError(f"mobilenet_v2 alpha {alpha} is not one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4")
    inputs = keras.Input(shape=input_shape, name="input")
    x, size = inputs, tuple(input_shape[:2])
    if input_size is not None and (input_size, input_size) != size:
        x = keras.layers.Resizing(input_size, input_size, name="resize")(x)
        size = (input_size, input_size)
    if min(size) < 32:
        raise UserError(f"mobilenet_v2 needs images of at least 32x32, got {size}; set data.resize or model.params.input_size")
    backbone = keras.applications.MobileNetV2(
        input_shape=(*size, 3), alpha=alpha, include_top=False, weights=None, pooling="avg"
    )
    # keras.applications sets BatchNormalization momentum 0.999 (ImageNet-length training): after the few hundred
    # steps of a from-scratch run the moving statistics are still near their initial values and the trained model
    # predicts at chance. 0.9 lets them follow the data within tens of steps.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(x)  # [0,1] pixels -> MobileNet's [-1,1]
    return keras.Model(inputs, _head(keras, backbone(x), num_classes), name="mobilenet_v2")


def resnet(input_shape, num_classes: int, width: int = 16, blocks: tuple[int, ...] | list[int] = (2, 2)):
    """A small ResNet (He et al. 2016): a 3x3 Conv-BN-ReLU stem, one stage per entry of `blocks` with that many basic
    blocks (two 3x3 Conv-BN added to the block's input, then ReLU), global average pooling and the logits. Each stage
    after the first doubles the width and halves the resolution; its first block's shortcut then averages 2x2 pixels
    and projects them with a 1x1 Conv-BN (the ResNet-D shortcut), every other shortcut is the identity."""
    _, keras = import_tf()
    if len(input_shape) != 3:
        raise UserError(f"resnet needs images (H, W, C); the data has shape {tuple(input_shape)}: set data.shape")
    if not blocks or min(blocks) < 1:
        raise UserError(f"resnet blocks {list(blocks)} must list at least one stage, each of at least one block, e.g. [2, 2]")

    def conv_bn(x, filters: int, size: int, stride: int, name: str):
        x = keras.layers.Conv2D(filters, size, strides=stride, padding="same", use_bias=False, name=name)(x)
        return keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)  # 0.9: see mobilenet_v2

    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.ReLU(name="stem_relu")(conv_bn(inputs, int(width), 3, 1, "stem"))
    for stage, count in enumerate(blocks):
        filters = int(width) * 2**stage
        for block in range(int(count)):
            name = f"stage{stage + 1}_block{block + 1}"
            stride = 2 if stage > 0 and block == 0 else 1
            y = keras.layers.ReLU(name=f"{name}_relu")(conv_bn(x, filters, 3, stride, f"{name}_conv1"))
            y = conv_bn(y, filters, 3, 1, f"{name}_conv2")
            shortcut = x
            if stride != 1:  # average, then project (ResNet-D): oneDNN's strided 1x1 convolution gradient can crash
                shortcut = keras.layers.AveragePooling2D(stride, padding="same", name=f"{name}_shortcut_pool")(shortcut)
            if stride != 1 or x.shape[-1] != filters:
                shortcut = conv_bn(shortcut, filters, 1, 1, f"{name}_shortcut")
            x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _head(keras, x, num_classes), name="resnet")


ZOO = {"mlp": mlp, "small_cnn": small_cnn, "mobilenet_v2": mobilenet_v2, "resnet": resnet}


def check_params(function, params: dict, what: str) -> None:
    accepted = [p for p in inspect.signature(function).parameters if p not in ("input_shape", "num_classes")]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(function).parameters.values())
    for key in params:
        if key not in accepted and not takes_kwargs:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"accepted: {', '.join(accepted) or 'none'}"
            raise UserError(f"model.params.{key} is not a parameter of {what}; {hint}")


def resolve_builder(path: str):
    module_name, _, function_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"model.builder: cannot import module '{module_name}' ({exc}); check the name and PYTHONPATH") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(f"model.builder: module '{module_name}' has no function '{function_name}'")
    return function


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int):
    """Build the spec's model for this data, checking that the model accepts the data's shape."""
    _, keras = import_tf()
    function = ZOO[spec.zoo] if spec.zoo else resolve_builder(spec.builder)
    what = spec.zoo or spec.builder
    check_params(function, spec.params, what)
    model = function(input_shape=tuple(input_shape), num_classes=num_classes, **spec.params)
    if not isinstance(model, keras.Model):
        raise UserError(f"model.builder {spec.builder} returned {type(model).__name__}, not a tf.keras Model (tf_keras)")
    expected = tuple(model.input_shape[1:])
    if any(e is not None and e != d for e, d in zip(expected, input_shape, strict=False)) or len(expected) != len(input_shape):
        raise UserError(
            f"model {what} expects inputs of shape {expected} but the data has shape {tuple(input_shape)}; "
            "fix the builder or set data.shape / data.resize"
        )
    outputs = model.output_shape[-1]
    if outputs != num_classes:
        raise UserError(f"model {what} has {outputs} outputs but the data has {num_classes} classes")
    return model
