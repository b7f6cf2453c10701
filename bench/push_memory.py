"""Peak memory of `modelpress step push` publishing a 1 GiB artifact to an S3 endpoint (moto's server over HTTP).

Generates a blessed 1 GiB artifact, starts a moto S3 server, runs the push as a child process and reads the
child's peak RSS (bench/processes.run_measured: its high-water mark and its process tree's). Fails (exit 1) above the limit.

    python -m bench.push_memory [--size-mb 1024] [--limit-mb 300] [--part-size-mb 8] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.processes import S3_CREDENTIALS, run_measured, start_s3_server
from modelpress.common.progress import log
from modelpress.io.artifacts import ArtifactMeta, finish

CHUNK = 16 << 20


def make_blessed_artifact(root: Path, size_mb: int) -> Path:
    """An artifact holding `size_mb` MiB of random weights, and a validation folder that blesses it."""
    artifact, validation = root / "artifact", root / "validation"
    artifact.mkdir()
    validation.mkdir()
    with open(artifact / "weights.bin", "wb") as handle:
        for _ in range(size_mb * (1 << 20) // CHUNK):
            handle.write(os.urandom(CHUNK))
    (artifact / "model.json").write_text(json.dumps({"weights": "weights.bin"}))
    finish(artifact, ArtifactMeta(format="raw", step="bench", model_path="model.json", config_hash="bench"))
    blessing = {"name": "weights", "artifact": str(artifact), "format": "raw", "blessed": True, "reasons": [],
                "metrics": {"size_bytes": size_mb << 20}, "thresholds": {}, "gates": []}
    (validation / "blessing.json").write_text(json.dumps(blessing))
    return validation


def measured_push(validation: Path, registry: str, output: Path, env: dict, part_size_mb: int, concurrency: int) -> tuple[int, float, str]:
    """(exit status, peak RSS in MiB, stderr) of one push run as a child process."""
    config = {"push": {"uri": registry, "model_name": "bench", "part_size_mb": part_size_mb, "max_concurrency": concurrency}}
    command = [sys.executable, "-m", "modelpress", "step", "push", "--config", json.dumps(config),
               "--input", f"validations={validation}", "--output", str(output)]
    status, peak_mb, _, stderr = run_measured(command, env)
    return status, peak_mb, stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="artifact size in MiB (default 1024)")
    parser.add_argument("--limit-mb", type=float, default=300, help="fail above this peak RSS (default 300)")
    parser.add_argument("--part-size-mb", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    import boto3

    with tempfile.TemporaryDirectory(prefix="modelpress-bench-") as tmp:
        log(f"writing a {args.size_mb} MiB artifact")
        validation = make_blessed_artifact(Path(tmp), args.size_mb)
        server, endpoint = start_s3_server()
        try:
            env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS}
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
            s3.create_bucket(Bucket="bench")
            log(f"pushing it to {endpoint} (part size {args.part_size_mb} MiB, concurrency {args.concurrency})")
            started = time.monotonic()
            status, peak_mb, stderr = measured_push(validation, "s3://bench/registry", Path(tmp) / "release", env,
                                                    args.part_size_mb, args.concurrency)
            seconds = time.monotonic() - started
            if status != 0:
                print(stderr, file=sys.stderr)
                return 1
            uploaded = s3.head_object(Bucket="bench", Key="registry/bench/1/artifacts/weights/weights.bin")["ContentLength"]
            parts = s3.head_object(Bucket="bench", Key="registry/bench/1/artifacts/weights/weights.bin", PartNumber=1).get("PartsCount")
        finally:
            server.terminate()
            server.wait(30)
    verdict = "within" if peak_mb <= args.limit_mb else "ABOVE"
    print(f"push of a {uploaded / (1 << 30):.2f} GiB artifact ({parts} parts of {args.part_size_mb} MiB, concurrency "
          f"{args.concurrency}) in {seconds:.0f}s: peak RSS of the push process {peak_mb:.0f} MiB, {verdict} the "
          f"{args.limit_mb:.0f} MiB limit")
    return 0 if peak_mb <= args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
