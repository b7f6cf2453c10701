"""The channel graph of a Keras model, for structured pruning: which output channels of which Conv2D and Dense layers
must be removed together, and the smaller model without them.

The model's functional graph is traced layer by layer, through nested models (mobilenet_v2's backbone) as if they
were inlined. Every channel a Conv2D or Dense layer produces is an *atom*; each tensor's last axis is a list of atoms:
- channel-wise layers (BatchNormalization, DepthwiseConv2D, activations, padding, pooling, Dropout, Rescaling,
  Resizing, global pooling) pass their input's atoms through;
- Add and the other element-wise merges tie their inputs' atoms position by position: a channel of a residual sum
  can only go if it goes in every producer of the sum;
- Concatenate joins its inputs' atoms, so channel indices after it are offset;
- Flatten repeats the atoms once per spatial position;
- Conv2D and Dense read their input's atoms along their kernel's input axis and produce new ones.
Atoms tied together form a *channel*: removing it removes its filters in every producer and its input rows in every
reader. The model's input and output channels are never removed (the output's are the classes). A *group* is a set of
producers whose channels are tied to one another (the convolutions of all blocks of one residual stage).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.tf import import_tf
from modelpress.ml.compression import kernel_weights, leaf_layers_by_name

PRODUCERS = {"Dense": "units", "Conv2D": "filters"}  # layer type -> the config key of its output width
# Layers after which each channel is still where it was and holds what it held; the activation criterion reads the
# last of these after a producer.
CHANNELWISE = (
    "BatchNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Dropout",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
)
# Channel-wise too, but changing values in ways an activation statistic should not average over.
PASS_THROUGH = (*CHANNELWISE, "DepthwiseConv2D", "ZeroPadding2D", "Rescaling", "Resizing")
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
SUPPORTED = (*PRODUCERS, *PASS_THROUGH, *MERGES, "Concatenate", "Flatten")


@dataclass
class Node:
    name: str
    kind: str  # the layer's class name
    config: dict  # the layer's config, from which its smaller copy is made
    inputs: list[str]  # the nodes whose outputs it reads
    layer: Any = None  # the live layer holding the weights; None for the model's input


@dataclass
class ChannelGroup:
    layers: list[str]  # the producers (Conv2D/Dense) whose output channels are tied to one another
    channels: np.ndarray  # the ids of the group's removable channels, in the first producer's order

    @property
    def title(self) -> str:
        if len(self.layers) == 1:
            return f"layer '{self.layers[0]}'"
        return f"the group of layers {', '.join(map(repr, self.layers))} (tied by Add/Concatenate)"


def trace(model) -> tuple[dict[str, Node], str, str]:
    """The model's layers as one flat graph in topological order, nested models inlined, with its input and output
    nodes; refuses what cannot be rebuilt with fewer channels."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError("prune: structured pruning needs a model with one input and one output; use method magnitude")
    live = leaf_layers_by_name(model)
    nodes: dict[str, Node] = {}

    def add(config: dict, feed: str | None) -> str:
        """Add a (sub)model's layers, `feed` being the node its input reads (None: the model's own input); returns the
        node holding its output."""
        if len(config.get("input_layers", [None])) != 1:
            raise UserError(f"prune: nested model '{config['name']}' has several inputs; structured pruning needs one")
        alias: dict[str, str] = {}  # a layer name in this (sub)model -> the node holding its output
        previous = feed
        for entry in config["layers"]:
            kind, name = entry["class_name"], entry["config"]["name"]
            if kind == "InputLayer":
                if feed is None:
                    nodes[name] = Node(name, kind, entry["config"], [])
                alias[name] = previous = feed or name
                continue
            if "inbound_nodes" not in entry:  # Sequential: each layer reads the one before
                reads = [previous or model_input(model, nodes)]
            elif len(entry["inbound_nodes"]) != 1:
                raise UserError(f"prune: layer '{name}' is called more than once; structured pruning needs each layer used once")
            else:
                reads = [alias[inbound[0]] for inbound in entry["inbound_nodes"][0]]
            if kind in ("Functional", "Sequential", "Model"):
                alias[name] = add(entry["config"], reads[0])
            else:
                if name in nodes:
                    raise UserError(f"prune: two layers are named '{name}' (one inside a nested model); rename one")
                nodes[name] = Node(name, type(live[name]).__name__, live[name].get_config(), reads, live[name])
                check_layer(nodes[name])
                alias[name] = name
            previous = alias[name]
        outputs = config.get("output_layers")
        return alias[outputs[0][0]] if outputs else previous

    output = add(model.get_config(), None)
    return nodes, next(name for name, node in nodes.items() if not node.inputs), output


def model_input(model, nodes: dict[str, Node]) -> str:
    """The input node of a Sequential model whose config lists no InputLayer."""
    name = model.input_names[0]
    config = {"batch_input_shape": model.input_shape, "dtype": model.inputs[0].dtype.name, "name": name}
    nodes.setdefault(name, Node(name, "InputLayer", config, []))
    return name


def check_layer(node: Node) -> None:
    """Refuse a layer whose channels cannot be followed or sliced."""
    layer, kind = node.layer, node.kind
    if kind not in SUPPORTED:
        raise UserError(
            f"prune: structured pruning cannot follow layer '{node.name}', a {kind}; it rebuilds graphs of "
            f"{', '.join(SUPPORTED)}: use method magnitude for this model"
        )
    problem = None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        problem = "is channels_first (structured pruning needs channels_last)"
    elif kind == "Conv2D" and layer.groups != 1:
        problem = "is a grouped convolution"
    elif kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
        problem = "has a depth multiplier other than 1"
    elif kind == "BatchNormalization" and list(layer.axis) != [len(layer.input_shape) - 1]:
        problem = f"normalises axis {layer.axis}, not the channels"
    elif kind == "Rescaling" and (np.ndim(layer.scale) or np.ndim(layer.offset)):
        problem = "scales each channel differently"
    if problem:
        raise UserError(f"prune: layer '{node.name}' {problem}; structured pruning cannot remove its channels: use method magnitude")


@dataclass
class ChannelGraph:
    """The traced model with its channels: `channel_of(node)` gives the channel id of each position of a node's output's
    last axis, and `groups` the sets of producers whose channels can be removed."""

    model: Any
    nodes: dict[str, Node] = field(init=False)
    input: str = field(init=False)
    output: str = field(init=False)
    groups: list[ChannelGroup] = field(init=False)

    def __post_init__(self):
        self.nodes, self.input, self.output = trace(self.model)
        self._parent: list[int] = []  # union-find over atoms
        self._atoms: dict[str, np.ndarray] = {}
        for node in self.nodes.values():
            self._atoms[node.name] = self._output_atoms(node)
        self._channel = np.array([self._find(atom) for atom in range(len(self._parent))], dtype=np.int64)
        # The model's input channels are the data's, its output's the classes: never removed.
        self.protected = {int(c) for name in (self.input, self.output) for c in self.channel_of(name)}
        self.groups = self._tied_producers()

    def _new_atoms(self, count: int) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        return np.arange(start, start + count)

    def _find(self, atom: int) -> int:
        while self._parent[atom] != atom:
            self._parent[atom] = self._parent[self._parent[atom]]
            atom = self._parent[atom]
        return atom

    def _tie(self, first: np.ndarray, second: np.ndarray, where: str) -> None:
        if len(first) != len(second):
            raise UserError(f"prune: layer '{where}' merges tensors of {len(first)} and {len(second)} channels; structured pruning needs equal widths")
        for a, b in zip(first, second, strict=True):
            self._parent[self._find(int(a))] = self._find(int(b))

    def _output_atoms(self, node: Node) -> np.ndarray:
        if not node.inputs:
            return self._new_atoms(int(node.config["batch_input_shape"][-1]))
        reads = [self._atoms[name] for name in node.inputs]
        if node.kind in PRODUCERS:
            return self._new_atoms(int(node.config[PRODUCERS[node.kind]]))
        if node.kind == "Flatten":
            return np.tile(reads[0], int(np.prod(node.layer.input_shape[1:-1], dtype=np.int64)))
        if node.kind == "Concatenate" and node.config["axis"] in (-1, len(node.layer.input_shape[0]) - 1):
            return np.concatenate(reads)
        for other in reads[1:]:  # element-wise merges, and Concatenate along a spatial axis
            self._tie(reads[0], other, node.name)
        return reads[0]

    def channel_of(self, name: str) -> np.ndarray:
        """The channel id of each position of the node's output's last axis."""
        return self._channel[self._atoms[name]]

    def _tied_producers(self) -> list[ChannelGroup]:
        """Producers sharing a removable channel, joined into groups (in the order of their first producer)."""
        removable = {
            name: [c for c in dict.fromkeys(self.channel_of(name).tolist()) if c not in self.protected]
            for name, node in self.nodes.items()
            if node.kind in PRODUCERS
        }
        leader = {name: name for name in removable}  # union-find over producers

        def find(name: str) -> str:
            while leader[name] != name:
                name = leader[name]
            return name

        first: dict[int, str] = {}  # channel -> the first producer holding it
        for name, channels in removable.items():
            for channel in channels:
                leader[find(name)] = find(first.setdefault(channel, name))
        groups: dict[str, ChannelGroup] = {}
        for name, channels in removable.items():
            if channels:
                group = groups.setdefault(find(name), ChannelGroup([], np.zeros(0, dtype=np.int64)))
                group.layers.append(name)
                held = set(group.channels.tolist())
                new = [c for c in channels if c not in held]
                group.channels = np.concatenate([group.channels, np.array(new, dtype=np.int64)])
        return list(groups.values())

    def group_of(self, layer: str) -> ChannelGroup | None:
        return next((group for group in self.groups if layer in group.layers), None)

    def kept(self, name: str, removed: np.ndarray) -> np.ndarray:
        """Which positions of the node's output's last axis survive the removal of the `removed` channels."""
        gone = np.zeros(len(self._channel), dtype=bool)
        gone[removed] = True
        return ~gone[self.channel_of(name)]

    def rebuild(self, removed: np.ndarray):
        """A plain functional model of the same layers (nested models inlined) without the removed channels, holding the
        surviving weights."""
        _, keras = import_tf()
        tensors = {}
        for name, node in self.nodes.items():
            if not node.inputs:
                tensors[name] = keras.Input(batch_shape=node.config["batch_input_shape"], dtype=node.config["dtype"], name=name)
                continue
            keep_in, keep_out = self.kept(node.inputs[0], removed), self.kept(name, removed)
            config = dict(node.config)
            if node.kind in PRODUCERS:
                config[PRODUCERS[node.kind]] = int(keep_out.sum())
            layer = type(node.layer).from_config(config)
            reads = [tensors[source] for source in node.inputs]
            tensors[name] = layer(reads if node.kind in (*MERGES, "Concatenate") else reads[0])
            weights = node.layer.get_weights()
            if weights:
                layer.set_weights([surviving(w, keep_in, keep_out, node.kind in PRODUCERS) for w in weights])
        return keras.Model(tensors[self.input], tensors[self.output], name=self.model.name)

    @contextlib.contextmanager
    def reads_zeroed(self, removed: np.ndarray):
        """The original model, while inside, computing what the rebuilt model computes: every kernel row that reads a
        removed channel is zero (BatchNormalization of a removed channel still shifts it by beta, but nothing reads
        it). Cheap: no new model, so a sensitivity pass can try many removals."""
        saved = []
        for node in self.nodes.values():
            if node.kind not in PRODUCERS:
                continue
            gone = ~self.kept(node.inputs[0], removed)
            if gone.any():
                kernel = node.layer.kernel
                values = kernel.numpy()
                saved.append((kernel, values))
                zeroed = values.copy()
                zeroed[..., gone, :] = 0  # kernels are (..., inputs, outputs)
                kernel.assign(zeroed)
        try:
            yield self.model
        finally:
            for kernel, values in saved:
                kernel.assign(values)

    def multiply_adds(self, removed: np.ndarray) -> int:
        """Multiply-accumulates of one example through the kernels (Dense, Conv2D, DepthwiseConv2D) once the removed
        channels are gone: the arithmetic pruning saves, counted without building a model."""
        total = 0
        for name, node in self.nodes.items():
            if node.kind not in (*PRODUCERS, "DepthwiseConv2D"):
                continue
            kernel = kernel_weights(node.layer)[0].shape  # (spatial..., inputs, outputs or outputs per input)
            positions = int(np.prod(node.layer.output_shape[1:-1], dtype=np.int64))  # 1 for Dense, H x W for convolutions
            inputs = int(self.kept(node.inputs[0], removed).sum())
            outputs = int(self.kept(name, removed).sum()) if node.kind in PRODUCERS else int(kernel[-1])
            total += positions * int(np.prod(kernel[:-2], dtype=np.int64)) * inputs * outputs
        return total

    def chain_end(self, name: str) -> str:
        """The last channel-wise layer after a producer, alone on its path: where its channels' values are final."""
        readers: dict[str, list[Node]] = {}
        for node in self.nodes.values():
            for source in node.inputs:
                readers.setdefault(source, []).append(node)
        while len(readers.get(name, [])) == 1 and readers[name][0].kind in CHANNELWISE:
            name = readers[name][0].name
        return name


def surviving(weight: np.ndarray, keep_in: np.ndarray, keep_out: np.ndarray, producer: bool) -> np.ndarray:
    """A layer's weight without the removed channels: kernels lose input rows (axis -2) and, in a producer, output
    columns; per-channel vectors (bias, BatchNormalization's four) keep the surviving outputs (a channel-wise layer's
    outputs are its inputs)."""
    if weight.ndim == 1:
        return weight[keep_out]
    weight = weight[..., keep_in, :]
    return weight[..., keep_out] if producer else weight
