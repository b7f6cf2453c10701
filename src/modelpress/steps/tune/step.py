"""tune: search train's hyperparameters (and model parameters) with keras-tuner's random, Bayesian or Hyperband
oracle, training each trial with the same `fit` as the train step, and write the best configuration as `best.json`
({"train": {...}, "model": {"params": {...}}}) for train's `hyperparameters` input.

keras-tuner's trial folders live in a scratch directory; the output holds best.json and artifact.json, whose details
list every trial (hyperparameters, score, epochs, status), best first.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from modelpress.common.errors import StepFailed, UserError, require
from modelpress.common.progress import log
from modelpress.common.tf import import_tf
from modelpress.contract.schema import spec_hash
from modelpress.contract.training import MODEL_PARAM_PREFIX, TUNABLE_TRAIN, TuneSpec, is_integer_range
from modelpress.io import storage
from modelpress.io.artifacts import ArtifactMeta, finish
from modelpress.io.data import load_dataset
from modelpress.ml.models import build_model
from modelpress.ml.training import fit
from modelpress.steps.tune.config import TuneConfig

BEST_FILE = "best.json"
DEFAULT_MAX_TRIALS = 10
DEFAULT_FACTOR = 3
# Hyperband's own bookkeeping values in a trial's hyperparameters.
HYPERBAND_PREFIX = "tuner/"


def encoded_choices(choices: list[Any]) -> bool:
    """keras-tuner chooses among ints, floats, strings or booleans of one type; anything else (e.g. layer lists like
    [[32], [64]]) is chosen as its JSON text and decoded for the trial."""
    kinds = {type(c) for c in choices}
    return len(kinds) > 1 or not kinds <= {int, float, str, bool}


def declare_space(space: dict[str, Any]):
    kt = require("keras_tuner", "tf")
    hp = kt.HyperParameters()
    for name, entry in space.items():
        if isinstance(entry, list):
            hp.Choice(name, [json.dumps(c) for c in entry] if encoded_choices(entry) else entry)
        elif is_integer_range(name, entry):
            step = int(entry.step) if entry.step else None
            hp.Int(name, int(entry.min), int(entry.max), step=step, sampling=entry.sampling)
        else:
            hp.Float(name, entry.min, entry.max, step=entry.step, sampling=entry.sampling)
    return hp


def trial_values(space: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A trial's values under the space's names, JSON-encoded choices decoded, Hyperband bookkeeping left out."""
    decoded = {}
    for name, entry in space.items():
        value = values[name]
        decoded[name] = json.loads(value) if isinstance(entry, list) and encoded_choices(entry) else value
    return decoded


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train fields, model params) of one configuration."""
    train = {k: v for k, v in values.items() if k in TUNABLE_TRAIN}
    params = {k.removeprefix(MODEL_PARAM_PREFIX): v for k, v in values.items() if k.startswith(MODEL_PARAM_PREFIX)}
    return train, params


def check_model_choices(config: TuneConfig, data) -> None:
    """Build the model with every model-parameter choice (both bounds of a range) before any trial trains, so a
    value the model cannot take fails now, in one line, instead of inside the search."""
    for name, entry in config.tune.space.items():
        if not name.startswith(MODEL_PARAM_PREFIX):
            continue
        for value in entry if isinstance(entry, list) else [entry.min, entry.max]:
            value = int(value) if not isinstance(entry, list) and is_integer_range(name, entry) else value
            params = {**config.model.params, name.removeprefix(MODEL_PARAM_PREFIX): value}
            spec = config.model.model_copy(update={"params": params})
            try:
                build_model(spec, data.input_shape, data.num_classes)
            except UserError:
                raise
            except Exception as exc:  # the builder itself rejects the value (wrong type, impossible shape)
                raise UserError(f"tune.space.{name}: the model cannot be built with {value!r} ({exc}); change the choices") from None


def make_oracle(tune: TuneSpec, hp):
    kt = require("keras_tuner", "tf")
    direction = "max" if tune.objective == "val_accuracy" else "min"
    common = {"objective": kt.Objective(tune.objective, direction), "hyperparameters": hp, "seed": tune.seed}
    if tune.algorithm == "random":
        return kt.oracles.RandomSearchOracle(max_trials=tune.max_trials or DEFAULT_MAX_TRIALS, **common)
    if tune.algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=tune.max_trials or DEFAULT_MAX_TRIALS, **common)
    return kt.oracles.HyperbandOracle(max_epochs=tune.epochs, factor=tune.factor or DEFAULT_FACTOR, hyperband_iterations=1, **common)


def search(config: TuneConfig, data, scratch: Path) -> list[dict[str, Any]]:
    """Run the search; every trial's record, in the order the trials ran."""
    kt = require("keras_tuner", "tf")
    _, keras = import_tf()
    tune = config.tune
    records: list[dict[str, Any]] = []

    class FitTuner(kt.engine.base_tuner.BaseTuner):
        """Trials train with the train step's `fit` (tf-keras); keras-tuner only proposes values and ranks scores."""

        def run_trial(self, trial, *args, **kwargs):
            raw = trial.hyperparameters.values
            values = trial_values(tune.space, raw)
            train_values, params = split_values(values)
            epochs = raw.get(f"{HYPERBAND_PREFIX}epochs", tune.epochs)
            initial_epoch = raw.get(f"{HYPERBAND_PREFIX}initial_epoch", 0)
            train = config.train.model_copy(update={**train_values, "epochs": epochs - initial_epoch})
            keras.utils.set_random_seed(config.train.seed)
            model = build_model(config.model.model_copy(update={"params": {**config.model.params, **params}}), data.input_shape, data.num_classes)
            resumed = raw.get(f"{HYPERBAND_PREFIX}trial_id")
            if resumed:  # Hyperband's next round continues the trial it promoted
                model.load_weights(scratch / f"{resumed}.weights.h5")
            number = int(trial.trial_id) + 1
            log(f"tune trial {number}: {values}, epochs {initial_epoch}->{epochs}")
            history = fit(model, data, train, label=f"tune trial {number}")
            if tune.algorithm == "hyperband":
                model.save_weights(scratch / f"{trial.trial_id}.weights.h5")
            scores = history.history[tune.objective]
            score = float(max(scores) if tune.objective == "val_accuracy" else min(scores))
            if not math.isfinite(score):  # recorded as a failed trial, ranked last
                log(f"tune trial {number}: failed, {tune.objective} is {score} (training diverged)")
                raise kt.errors.FailedTrialError(f"{tune.objective} is {score}: training diverged")
            records.append({"trial": trial.trial_id, "hyperparameters": values, tune.objective: score, "epochs": epochs})
            log(f"tune trial {number}: {tune.objective} {score:.4f}")
            return {tune.objective: score}

    tuner = FitTuner(make_oracle(tune, declare_space(tune.space)), directory=str(scratch), project_name="search", overwrite=True)
    from keras_tuner.src import config as kt_config

    debug, kt_config.DEBUG = kt_config.DEBUG, False  # a failed trial is one log line and a record, not a traceback
    try:
        tuner.search(verbose=0)
    except RuntimeError as exc:  # keras-tuner gives up after three failed trials in a row
        raise StepFailed(f"tune: trials keep failing; the last error: {last_line(str(exc))}") from None
    finally:
        kt_config.DEBUG = debug
    for record in records:
        record["status"] = "COMPLETED"
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED":  # kept in the record, ranked last
            values = trial_values(tune.space, trial.hyperparameters.values)
            records.append({"trial": trial.trial_id, "hyperparameters": values, tune.objective: None,
                            "status": trial.status, "error": last_line(trial.message)})
    if not any(r["status"] == "COMPLETED" for r in records):
        raise StepFailed(f"tune: no trial completed; the first error: {records[0]['error'] if records else 'none recorded'}")
    return records


def last_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else "unknown"


def rank(records: list[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Best first (highest val_accuracy or lowest val_loss), failed trials last; ties keep the order trials ran."""
    sign = -1 if objective == "val_accuracy" else 1
    return sorted(records, key=lambda r: (r[objective] is None, sign * (r[objective] or 0)))


def run(config: TuneConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    import_tf()
    storage.check_output(output, overwrite)
    tune = config.tune
    data = load_dataset(config.data)
    if not data.count("val"):
        raise UserError("tune ranks trials on the validation split, which is empty; set data.split.val > 0, e.g. 0.1")
    check_model_choices(config, data)
    log(f"tune: {tune.algorithm} search over {', '.join(tune.space)}, {tune.epochs} epochs per trial, objective {tune.objective}")
    with tempfile.TemporaryDirectory(prefix="modelpress-tune-") as scratch:
        trials = rank(search(config, data, Path(scratch)), tune.objective)
    best = trials[0]
    train_values, params = split_values(best["hyperparameters"])
    log(f"tune: best of {len(trials)} trials: {best['hyperparameters']} ({tune.objective} {best[tune.objective]:.4f})")
    payload = {
        "train": train_values,
        **({"model": {"params": params}} if params else {}),
        "objective": tune.objective,
        "score": best[tune.objective],
    }
    with storage.staged_output(output, overwrite=overwrite) as folder:
        (folder / BEST_FILE).write_text(json.dumps(payload, indent=2))
        meta = finish(
            folder,
            ArtifactMeta(
                format="hyperparameters",
                step="tune",
                model_path=BEST_FILE,
                config_hash=spec_hash(config),
                data_hash=data.hash,
                metrics={f"best_{tune.objective}": best[tune.objective], "trials": len(trials)},
                details={"algorithm": tune.algorithm, "objective": tune.objective, "best": payload, "trials": trials},
            ),
        )
    return {"uri": output, "format": meta.format, "metrics": meta.metrics, "best": payload}
