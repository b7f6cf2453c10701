"""deploy: put a blessed SavedModel in front of TensorFlow Serving, test it there, then move the `stable` label.

1. Refuse an unblessed model; check that the artifact reproduces the outputs its validation recorded (golden.npz).
2. Copy its SavedModel to <base>/<model>/<version>/ (saved_model.pb last on S3; a staged rename locally), where
   the version is the release's number when push ran, the existing version holding the same files, or the next one.
3. With a server: reload its config through gRPC with the new version beside `stable`, wait for GetModelStatus
   AVAILABLE, label it `canary`, send the golden rows through Predict on the `canary` label and compare, then move
   `stable` to it. Anything failing puts the server back as it was: `stable` never points at an untested version.
   Without a server address: write the base path and `models.config` and say that no server was reloaded.
`rollback` moves `stable` back to the version it pointed at before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from modelpress.common.errors import StepFailed, UserError
from modelpress.common.names import check_name
from modelpress.common.progress import log
from modelpress.contract.publishing import ServingSpec
from modelpress.io import releases, storage
from modelpress.io.artifacts import check_blessed_content, open_artifact, sha256_file
from modelpress.io.modelfiles import check_model_files
from modelpress.steps.deploy import serving
from modelpress.steps.deploy.config import DeployConfig
from modelpress.steps.deploy.golden import DEPLOYMENT_FILE, compare_outputs, read_validation, served_model

PB_FILE = "saved_model.pb"  # TF Serving loads a version once this file is there: it is written last


# ------------------------------------------------------------------------------------------- the base path
def tree_digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(folder).as_posix()}\t{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def complete_versions(base: str, model: str) -> list[int]:
    """Version folders TF Serving would load: integer names holding saved_model.pb."""
    model_uri = storage.join(base, check_name(model, "model name"))
    numbers = sorted(int(n) for n in releases.child_names(model_uri) if n.isdigit())
    return [v for v in numbers if storage.exists(storage.join(model_uri, str(v), PB_FILE))]


def version_digest(base: str, model: str, version: int) -> str:
    with storage.local_copy(storage.join(base, check_name(model, "model name"), str(version))) as folder:
        return tree_digest(folder)


def copy_version(saved_model: Path, uri: str) -> None:
    if storage.is_s3(uri):
        storage.remove(uri)  # leftovers of a killed copy (no saved_model.pb, so never loaded)
        storage.upload_folder(saved_model, uri, last=PB_FILE)
        return
    final = Path(uri)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging")  # not an integer: TF Serving ignores it
    shutil.rmtree(staging, ignore_errors=True)  # what a killed copy left
    try:
        shutil.copytree(saved_model, staging, ignore=shutil.ignore_patterns(PB_FILE))
        shutil.copyfile(saved_model / PB_FILE, staging / PB_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def place_version(base: str, model: str, saved_model: Path, pinned: int | None) -> tuple[int, bool]:
    """(version, already there): the pinned number, the version holding the same files, or the next number."""
    digest = tree_digest(saved_model)
    existing = complete_versions(base, model)
    if pinned is not None:
        if pinned in existing:
            if version_digest(base, model, pinned) != digest:
                raise UserError(
                    f"version {pinned} of '{model}' already exists in {base} with different files; versions never "
                    "change: publish a new release, or deploy to another base path"
                )
            return pinned, True
    else:  # newest first, stopping at the first match: on S3 each comparison downloads a version
        same = next((v for v in reversed(existing) if version_digest(base, model, v) == digest), None)
        if same is not None:
            return same, True
    version = pinned if pinned is not None else (existing[-1] + 1 if existing else 1)
    copy_version(saved_model, storage.join(base, check_name(model, "model name"), str(version)))
    return version, False


# ----------------------------------------------------------------------------------------------- the rollout
def promote(state: dict, version: int) -> None:
    state["stable"] = version
    if not state["history"] or state["history"][-1] != version:
        state["history"].append(version)
    state["updated"] = releases._now()


def promote_stored(base: str, model: str, version: int) -> dict:
    """Move `stable` to `version` in the stored state (compare-and-swap) and return the state."""
    return serving.update_state(base, model, lambda state: promote(state, version))


def roll_out(client: serving.ServingClient, base: str, spec: ServingSpec, model: str, new: int, state: dict, golden) -> dict:
    """Load `new` beside stable, smoke-test it as canary, then promote. On failure the server is put back."""
    old = state["stable"]
    kept = sorted({v for v in (old, new) if v is not None})
    stable_label = {serving.STABLE: old} if old is not None else {}

    def reload(labels: dict) -> None:
        client.reload(serving.server_config(base, spec.mount_path, {model: (kept, labels)}))

    reload(stable_label)
    try:
        seconds = client.wait_available(model, new, spec.timeout_s)
        log(f"{model} version {new} AVAILABLE after {seconds:.1f}s; labelled canary, smoke Predict with {len(golden[0])} golden rows")
        reload({**stable_label, serving.CANARY: new})
        served = client.predict(model, golden[0], label=serving.CANARY)
        worst = compare_outputs(served, golden[1], spec.tolerance, f"TF Serving's outputs from version {new} (canary)")
    except StepFailed as exc:
        client.reload(serving.server_config(base, spec.mount_path, {model: serving.entry_for(state)}))
        where = f"stable stays at version {old}" if old is not None else "no version is labelled stable"
        raise StepFailed(f"{exc}; {where}") from None
    promote(state, new)
    client.reload(serving.server_config(base, spec.mount_path, {model: serving.entry_for(state)}))
    return {"max_abs_diff": worst, "rows": int(len(golden[0])), "seconds_to_available": round(seconds, 2)}


def client_for(spec: ServingSpec) -> serving.ServingClient | None:
    if spec.grpc_address is None and spec.rest_address is None:
        return None
    client = serving.ServingClient(spec.grpc_address, spec.rest_address)
    client.check_reachable()
    return client


def deploy(spec: ServingSpec, base: str, model_uri: str, validation_uri: str, pinned: int | None = None) -> dict:
    """Everything but the step's own output record; shared by the step and `modelpress deploy`."""
    model = spec.model_name
    if model is None:
        raise UserError("serving.model_name is not set; set it (a workflow defaults it to push.model_name or its name)")
    check_name(model, "model name")
    storage.check_bucket(base)
    blessing, *golden = read_validation(validation_uri)
    if not blessing.blessed:
        raise UserError(f"refusing to deploy {blessing.name}: it is not blessed ({'; '.join(blessing.reasons)}); fix it and validate again")
    client = client_for(spec)  # an unreachable server fails here, before anything is written
    from modelpress.ml.runtimes import SavedModelRunner

    with open_artifact(model_uri) as (folder, meta):
        check_blessed_content(blessing, folder, meta, model_uri)
        if meta.format != "saved_model":
            raise UserError(f"{model_uri} is a {meta.format} artifact; TF Serving deploys a saved_model artifact")
        check_model_files(folder, meta)
        local = SavedModelRunner(folder / meta.model_path).predict(golden[0])
        try:
            compare_outputs(local, golden[1], spec.tolerance, f"the outputs of {model_uri}")
        except StepFailed as exc:
            raise UserError(f"{exc}: {validation_uri} validated another model; pass the validation of this model") from None
        version, reused = place_version(base, model, folder / meta.model_path, pinned)
    log(f"{model} version {version} {'already in' if reused else 'written to'} {storage.join(base, model, str(version))}")
    state = serving.load_state(base, model)
    previous = state["stable"]
    smoke = None if client is None else roll_out(client, base, spec, model, version, state, golden)
    promote_stored(base, model, version)
    config_uri = serving.write_config_file(base, serving.server_config(base, spec.mount_path, {}))
    if client is None:
        log(f"no TF Serving address configured: wrote {config_uri} (stable -> version {version}); no server was reloaded")
    else:
        log(f"{model}: stable moved {previous} -> {version} on {spec.grpc_address}; config saved to {config_uri}")
    return {
        "model": model, "version": version, "reused": reused, "stable": version, "previous_stable": previous,
        "base_path": base, "config_file": config_uri, "reloaded": client is not None, "smoke": smoke,
    }


def run(config: DeployConfig, inputs: dict[str, str], output: str, overwrite: bool = False) -> dict:
    if config.serving.kind == "kserve":
        from modelpress.steps.deploy import kserve  # it imports this module

        return kserve.run(config, inputs, output, overwrite)
    storage.check_output(output, overwrite)
    spec = config.serving
    base = spec.base_path or storage.join(releases.run_folder(output), "serving")
    pinned = None
    if inputs.get("release"):
        pinned = int(json.loads(storage.read_bytes(storage.join(inputs["release"], "release.json")))["version"])
    result = deploy(spec, base, served_model(inputs), inputs["validation"], pinned)
    with storage.staged_output(output, overwrite=overwrite, marker=DEPLOYMENT_FILE) as folder:
        (folder / DEPLOYMENT_FILE).write_text(json.dumps(result, indent=2))
    return {"uri": output, **result}


def deploy_release(spec: ServingSpec, base: str, registry: str, version: int | None, label: str | None) -> dict:
    """`modelpress deploy`: deploy a published release's serving artifact under the release's version number."""
    if label is not None:
        check_name(label, "label")
    number = releases.resolve_version(registry, spec.model_name, version, label)
    manifest = releases.read_manifest(registry, spec.model_name, number)
    name = manifest["serving_artifact"]
    if name is None:
        raise UserError(f"release {number} of '{spec.model_name}' holds no saved_model artifact; TF Serving cannot run it")
    check_name(name, f"release {number}'s serving artifact")
    root = releases.version_uri(registry, spec.model_name, number)
    return deploy(spec, base, storage.join(root, releases.ARTIFACTS_DIR, name), storage.join(root, releases.VALIDATION_DIR, name), number)


def rollback(spec: ServingSpec, base: str, to: int | None = None) -> dict:
    """Move `stable` back to the version it pointed at before (or to `to`), loading it first when a server is given."""
    model = check_name(spec.model_name, "model name")
    state = serving.load_state(base, model)
    current = state["stable"]
    if current is None:
        raise UserError(f"'{model}' has no deployment in {base}; deploy it first (or check --base-path)")
    earlier = [v for v in state["history"] if v != current]
    target = to if to is not None else (earlier[-1] if earlier else None)
    if target is None:
        raise UserError(f"'{model}' has had only version {current} as stable in {base}; there is nothing to roll back to")
    if target == current:
        raise UserError(f"version {target} of '{model}' is already stable")
    if target not in complete_versions(base, model):
        raise UserError(f"version {target} of '{model}' is not in {base}; choose one of {complete_versions(base, model)}")
    client = client_for(spec)
    if client is not None:
        loading = serving.server_config(base, spec.mount_path, {model: (sorted({target, current}), {serving.STABLE: current})})
        client.reload(loading)
        try:
            client.wait_available(model, target, spec.timeout_s)
        except StepFailed as exc:
            client.reload(serving.server_config(base, spec.mount_path, {model: serving.entry_for(state)}))
            raise StepFailed(f"{exc}; stable stays at version {current}") from None
    def move_back(stored: dict) -> None:
        history = stored["history"]
        stored["history"] = history[: len(history) - history[::-1].index(target)] if target in history else [*history, target]
        stored["stable"], stored["updated"] = target, releases._now()

    state = serving.update_state(base, model, move_back)
    final = serving.server_config(base, spec.mount_path, {model: serving.entry_for(state)})
    if client is not None:
        client.reload(final)
    serving.write_config_file(base, final)
    log(f"{model}: stable moved back {current} -> {target}{'' if client else '; no server was reloaded (no address)'}")
    return {"model": model, "stable": target, "previous_stable": current, "reloaded": client is not None}
