"""Structural pruning: remove whole channels (Dense units, Conv2D filters), rebuild a physically smaller model, copy the
surviving weights into it and fine-tune it, by default with the unpruned model as teacher. The result has fewer
parameters and less arithmetic, not just more zeros.

It works on chains (the zoo's mlp and small_cnn) and on CNNs with residual adds, concatenations and depthwise
convolutions (mobilenet_v2, resnet): channels tied by an Add are removed in every producer of the sum together
(channels.py traces the graph and finds these groups). The output layer is never shrunk: its units are the classes.

How much each group loses (`allocation`):
- uniform: `ratio` of every group's channels;
- sensitivity: `ratio` of all removable channels together. Each group alone is pruned to 1/2, 1 and 3/2 times the
  ratio and the model measured on the validation split; each group then gets one of these shares (or none) so that
  the sum of the measured accuracy drops (then of the loss increases) is least while the target is reached.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelpress.common.errors import UserError
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.io.data import calibration_subset
from modelpress.ml.compression import layer_names
from modelpress.ml.distillation import LOGITS_LAYER, distiller
from modelpress.ml.training import fit
from modelpress.steps.prune.channels import PRODUCERS, ChannelGraph, ChannelGroup
from modelpress.steps.prune.config import PruneConfig

# Shares of the target ratio each group is tried at in the sensitivity pass.
SENSITIVITY_STEPS = (0.5, 1.0, 1.5)


def target_groups(graph: ChannelGraph, config: PruneConfig) -> list[ChannelGroup]:
    """The groups to shrink: every one, or those holding the named layers."""
    if not config.layers:
        groups = graph.groups
    else:
        groups = []
        for name in layer_names(graph.model, config.layers, "prune"):
            kind = graph.nodes[name].kind
            if kind not in PRODUCERS:
                raise UserError(f"prune: structured pruning removes Dense units and Conv2D filters; layer '{name}' is a {kind}")
            group = graph.group_of(name)
            if group is None and set(graph.channel_of(name)) <= set(graph.channel_of(graph.output)):
                raise UserError(f"prune: layer '{name}' produces the model's outputs, one unit per class; it is never shrunk")
            if group is None:
                raise UserError(f"prune: layer '{name}' adds its channels to the model's input (through Add); they cannot be removed")
            if all(group is not chosen for chosen in groups):
                groups.append(group)
    if not groups:
        raise UserError("prune: the model has no hidden Dense or Conv2D layer to shrink (the output layer never is)")
    return groups


def channel_scores(graph: ChannelGraph, groups: list[ChannelGroup], config: PruneConfig, data) -> list[np.ndarray]:
    """One score per channel of each group, summed over the group's producers; the lowest are removed."""
    producers = [name for group in groups for name in group.layers]
    if config.criterion == "magnitude":
        units = {}
        for name in producers:
            kernel = graph.nodes[name].layer.kernel.numpy()
            units[name] = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)  # L1 norm of each unit's weights
    else:
        _, keras = import_tf()
        flat = graph.rebuild(np.zeros(0, dtype=np.int64))  # the same model with every layer at the top level
        probe = keras.Model(flat.inputs, [flat.get_layer(graph.chain_end(name)).output for name in producers])
        sample, _ = calibration_subset(data, config.activation_samples, seed=config.train.seed)
        outputs = probe.predict(sample, batch_size=256, verbose=0)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        # Mean |activation| where the unit's value is final (after BN, ReLU...), over the sample and every position.
        units = {name: np.abs(out).reshape(-1, out.shape[-1]).mean(axis=0) for name, out in zip(producers, outputs, strict=True)}
    scores = []
    for group in groups:
        position = {int(channel): i for i, channel in enumerate(group.channels)}
        total = np.zeros(len(group.channels))
        for name in group.layers:
            for channel, score in zip(graph.channel_of(name).tolist(), units[name], strict=True):
                if channel in position:
                    total[position[channel]] += score
        scores.append(total)
    return scores


def lowest(group: ChannelGroup, scores: np.ndarray, count: int) -> np.ndarray:
    """The `count` channels of the group with the lowest scores (on ties, the later ones)."""
    return group.channels[np.argsort(-scores, kind="stable")[len(scores) - count :]]


def uniform_counts(groups: list[ChannelGroup], ratio: float) -> list[int]:
    counts = []
    for group in groups:
        channels = len(group.channels)
        count = round(channels * ratio)
        if count >= channels:
            raise UserError(
                f"prune: ratio {ratio} would remove all {channels} units of {group.title}; "
                "lower the ratio or leave the layer out of 'layers'"
            )
        counts.append(count)
    return counts


def sensitivity_rows(data, config: PruneConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Labelled rows the sensitivity pass measures on: the validation split, or training rows when it is empty."""
    split = "val" if data.count("val") else "train"
    if split == "train":
        log("prune: the validation split is empty; the sensitivity pass measures on training rows")
    x, y = data.head(split, config.sensitivity_samples)
    return np.asarray(x), np.asarray(y), split


def evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of a model that outputs probabilities."""
    probabilities = model.predict(x, batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y))
    loss = float(np.mean(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0))))
    return accuracy, loss


def sensitivity(graph, groups, scores, ratio: float, x, y) -> tuple[dict[str, float], list[list[dict[str, float]]]]:
    """The model on (x, y) as it is, and with each group alone pruned to each share of SENSITIVITY_STEPS."""
    accuracy, loss = evaluate(graph.model, x, y)
    baseline = {"accuracy": accuracy, "loss": loss}
    table = []
    for group, score in zip(groups, scores, strict=True):
        channels = len(group.channels)
        counts = sorted({min(channels - 1, round(channels * ratio * step)) for step in SENSITIVITY_STEPS} - {0})
        rows = []
        for count in counts:
            with graph.reads_zeroed(lowest(group, score, count)) as pruned:
                accuracy, loss = evaluate(pruned, x, y)
            rows.append({"removed": count, "ratio": round(count / channels, 4), "accuracy": accuracy, "loss": round(loss, 6)})
        table.append(rows)
        log(f"prune: sensitivity of {group.title}: " + ", ".join(f"{r['ratio']:.0%} -> {r['accuracy']:.4f}" for r in rows))
    return baseline, table


def removal(groups: list[ChannelGroup], scores: list[np.ndarray], counts: list[int]) -> np.ndarray:
    """The ids of the channels removed: each group's `count` lowest-scored."""
    chosen = [lowest(group, score, count) for group, score, count in zip(groups, scores, counts, strict=True)]
    return np.concatenate([np.zeros(0, dtype=np.int64), *chosen])


def allocate(graph: ChannelGraph, groups, scores, table, baseline: dict[str, float], target: float) -> list[int]:
    """Channels to remove from each group: under one tolerance for all groups, each takes the largest count it was
    measured at whose cost (accuracy drop, then loss increase, pruned alone) is within it; the tolerance is the
    smallest measured cost at which the model's multiply-adds fall by the `target` share. Sensitive groups thus keep
    more channels, and a group that breaks the model alone is pruned only when nothing else reaches the target. When
    even every group at its largest count falls short, that is what is removed."""

    def cost(row: dict[str, float]) -> tuple[float, float]:
        return max(0.0, baseline["accuracy"] - row["accuracy"]), max(0.0, row["loss"] - baseline["loss"])

    total = graph.multiply_adds(np.zeros(0, dtype=np.int64))
    counts = [0] * len(groups)
    for tolerance in sorted({cost(row) for rows in table for row in rows}):
        counts = [max((row["removed"] for row in rows if cost(row) <= tolerance), default=0) for rows in table]
        if total - graph.multiply_adds(removal(groups, scores, counts)) >= target * total:
            break
    return counts


def fine_tune(smaller, teacher, config: PruneConfig, data) -> dict[str, Any]:
    """Fit the pruned model, on the unpruned model's softened logits plus the labels when it can."""
    train = config.fine_tuning()
    details: dict[str, Any] = {"epochs": train.epochs, "learning_rate": train.learning_rate}
    with_teacher = config.teacher and LOGITS_LAYER in [layer.name for layer in teacher.layers]
    if config.teacher and not with_teacher:
        log(f"prune: the model has no '{LOGITS_LAYER}' layer to distil from; fine-tuning on the labels alone")
    if with_teacher:
        log(f"prune: fine-tuning with the unpruned model as teacher (T={config.temperature}, alpha={config.alpha})")
        fit(distiller(smaller, teacher, config.temperature, config.alpha), data, train, label="prune")
        details["teacher"] = {"temperature": config.temperature, "alpha": config.alpha}
    else:
        fit(smaller, data, train, label="prune")
        details["teacher"] = None
    return details


def prune_structure(model, config: PruneConfig, data) -> tuple[Any, dict[str, Any]]:
    graph = ChannelGraph(model)
    groups = target_groups(graph, config)
    scores = channel_scores(graph, groups, config, data)
    details: dict[str, Any] = {"ratio": config.ratio, "allocation": config.allocation, "criterion": config.criterion}
    if config.allocation == "uniform":
        counts = uniform_counts(groups, config.ratio)
    else:
        x, y, split = sensitivity_rows(data, config)
        baseline, table = sensitivity(graph, groups, scores, config.ratio, x, y)
        counts = allocate(graph, groups, scores, table, baseline, config.ratio)
        details["sensitivity"] = {"split": split, "rows": len(y), **baseline}
    removed = removal(groups, scores, counts)
    smaller = graph.rebuild(removed)
    details["groups"] = [
        {
            "layers": group.layers,
            "channels_before": len(group.channels),
            "channels_after": len(group.channels) - count,
            "ratio": round(count / len(group.channels), 4),
            **({"sensitivity": table[index]} if config.allocation == "sensitivity" else {}),
        }
        for index, (group, count) in enumerate(zip(groups, counts, strict=True))
    ]
    before, after = graph.multiply_adds(np.zeros(0, dtype=np.int64)), graph.multiply_adds(removed)
    shrunk = ", ".join(f"{' + '.join(g['layers'])} {g['channels_before']}->{g['channels_after']}" for g in details["groups"])
    log(f"prune: {shrunk}; {model.count_params():,} -> {smaller.count_params():,} parameters, {before:,} -> {after:,} multiply-adds")
    details.update(
        units={
            name: {"before": len(graph.channel_of(name)), "after": int(graph.kept(name, removed).sum())}
            for group in groups
            for name in group.layers
        },
        params_before=int(model.count_params()),
        params_after=int(smaller.count_params()),
        multiply_adds_before=before,
        multiply_adds_after=after,
        **fine_tune(smaller, model, config, data),
    )
    return smaller, details
