"""Fixtures of the container tests (modules marked `containers`): the built images (containers/test-engine.sh builds them before the suite) run the steps exactly
as the cluster would. Skipped, with the reason, where no Docker engine runs; an engine without the images fails."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from modelpress.contract.images import DEPENDENCY_SETS, image_for
from modelpress.kubernetes.image_build import GPU_ONLY_SETS, cpu_sets, docker_cli, engine_running
from tests.conftest import step_cli

# What `make images` builds here: every set but the GPU-only one (TensorRT needs CUDA at import).
CPU_SETS = [s for s in DEPENDENCY_SETS if s not in GPU_ONLY_SETS]
# How every step container runs in these tests: the pod's user, a read-only root file system with a writable /tmp
# (what a restricted pod security context gives), and the host's loopback network (the moto S3 server is there).
RUN_OPTIONS = ["--user", "10001", "--read-only", "--tmpfs", "/tmp:exec", "--network", "host"]


@pytest.fixture(scope="session")
def docker() -> str:
    try:
        cli = docker_cli()
    except Exception as exc:  # noqa: BLE001 (any reason there is no client is a reason to skip)
        pytest.skip(f"no docker client: {exc}")
    if not engine_running(cli):
        pytest.skip("no Docker engine running (make test starts one where it runs as root: containers/test-engine.sh)")
    return cli


@pytest.fixture(scope="session")
def images(docker) -> dict[str, str]:
    """The CPU images, which must exist once an engine runs: containers/test-engine.sh built them."""
    found = {}
    for name in cpu_sets():
        tag = image_for(name)
        if subprocess.run([docker, "image", "inspect", tag], capture_output=True).returncode != 0:
            pytest.fail(f"image {tag} is missing; build it with: make images")
        found[name] = tag
    return found


@pytest.fixture(scope="session")
def gpu_stand_in(docker, images) -> str:
    """GPU steps name the tf set's CUDA build (<version>-gpu), the same image plus NVIDIA's CUDA wheels. Without a GPU
    the CUDA wheels only add download time, so unless a CUDA build newer than the CPU build exists here (an older one
    carries older source), the CPU build is tagged in its place."""
    tag = image_for("tf", gpu=True)

    def created(image: str) -> str | None:
        found = subprocess.run([docker, "image", "inspect", "--format", "{{.Created}}", image], capture_output=True, text=True)
        return found.stdout.strip() if found.returncode == 0 else None

    gpu_build = created(tag)
    if gpu_build is None or gpu_build < created(images["tf"]):
        subprocess.run([docker, "tag", images["tf"], tag], check=True)
    return tag


def docker_run(docker: str, image: str, command: list[str], *, env: dict[str, str] | None = None, volumes: dict[str, str] | None = None,
               entrypoint: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`docker run` as the tests run every step: RUN_OPTIONS, the given environment and mounts."""
    arguments = [docker, "run", "--rm", *RUN_OPTIONS]
    for name, value in (env or {}).items():
        arguments += ["--env", f"{name}={value}"]
    for host, inside in (volumes or {}).items():
        arguments += ["--volume", f"{host}:{inside}"]
    arguments += ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run([*arguments, image, *command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared_dir(tmp_path) -> Path:
    """A folder the container user (uid 10001) can write, as a pod's emptyDir is."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


def s3_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }  # fmt: skip


# The small workflow both cluster paths run (test_cluster_path.py, test_airflow_cluster_path.py).
SPEC = """\
name: {name}
model: {{zoo: mlp, params: {{hidden: [32]}}}}
data: {{source: digits}}
train: {{epochs: 5, batch_size: 32, seed: 7}}
compress:
  - {{technique: prune, sparsity: 0.5, epochs: 1}}
targets: [saved_model, tflite_fp32, onnx, openvino_fp32]
gates: {{min_accuracy: 0.6}}
evaluation: {{latency_runs: 5, warmup_runs: 1}}
push: {{uri: "s3://{bucket}/{registry}"}}
serving: {{base_path: "s3://{bucket}/{serving}"}}
"""


def write_spec(folder: Path, name: str, bucket: str, registry: str, serving: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, bucket=bucket, registry=registry, serving=serving))
    return path


def release(bucket: str, registry: str, model: str) -> dict[str, tuple[str, float]]:
    """The published release's artifacts: name -> (format, test accuracy), from its manifest on S3."""
    client = boto3.client("s3")
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{registry}/{model}/1/manifest.json")["Body"].read())
    return {a["name"]: (a["format"], round(a["metrics"]["accuracy"], 6)) for a in manifest["artifacts"]}


@pytest.fixture(scope="module")
def local_release(s3_endpoint, tmp_path_factory):
    """What `modelpress run` publishes for the spec, on this machine: the reference both orchestrators must match."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_env(s3_endpoint).items():
            patch.setenv(name, value)
        bucket = f"local-{int(time.time() * 1000)}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        folder = tmp_path_factory.mktemp("local")
        started = time.monotonic()
        result = step_cli("run", str(write_spec(folder, "cpath", bucket, "registry", "serving")), "--out", str(folder / "run"))
        assert result.returncode == 0, result.stderr[-3000:]
        print(f"\nmodelpress run: {time.monotonic() - started:.0f} s")
        return release(bucket, "registry", "cpath")
