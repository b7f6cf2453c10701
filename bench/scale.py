"""Data larger than memory: peak RSS and throughput of the train and validate steps on streamed TFRecord shards,
local and on an S3 endpoint, beside the in-memory path on a subset that fits - in one run.

Writes deterministic image shards of the `generated` source (64x64 RGB by default, uint8 TFRecord): at least
--local-gb GB on local disk (kept under runs/bench/scale and reused while the parameters match), and uploads the first
--s3-gb GB to a moto S3 server on 127.0.0.1. Every case runs `modelpress step train` (one epoch of the zoo's
small_cnn) and `modelpress step validate` (its SavedModel) as child processes and reads each one's peak RSS from
/proc (bench/processes.py). Throughput is training examples per second of model.fit (the artifact's train_seconds), the data's scan and
digest excluded and reported as the step's wall time beside it.

    python -m bench.scale [--local-gb 8] [--s3-gb 1] [--subset-shards 4] [--image-size 64]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.harness import RESULTS, ROOT, machine, text_table, write_json
from bench.processes import S3_CREDENTIALS, run_measured, start_s3_server
from modelpress.common.progress import log
from modelpress.contract.data_sources import GeneratedData
from modelpress.io import storage
from modelpress.io.data import generated_examples
from modelpress.io.shards import write_tfrecord_shard

WORK = ROOT / "runs" / "bench" / "scale"
MEMORY_LIMIT_BYTES = 2e9  # the goal's 2 GB, in the same decimal GB as the data sizes
RECORD_OVERHEAD = 60  # bytes of tf.train.Example and TFRecord framing around one image's pixels
STREAMING = {"shuffle_buffer": 4096, "parallel_reads": 4, "prefetch_batches": 2}


def write_shards(folder: Path, spec: GeneratedData, shards: int, per_shard: int) -> None:
    """Shards 0..shards-1 of the generated set as uint8 TFRecord files; reused when a manifest says they match."""
    manifest = {"spec": spec.model_dump(mode="json"), "shards": shards, "per_shard": per_shard}
    written = folder.with_suffix(".json")  # beside the folder: every file in it is read as a shard
    if written.is_file() and json.loads(written.read_text()) == manifest:
        log(f"reusing {shards} shards in {folder}")
        return
    written.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.monotonic()
    for number in range(shards):
        images, labels = generated_examples(spec, number * per_shard, (number + 1) * per_shard)
        write_tfrecord_shard(str(folder / f"part-{number:05d}.tfrecord"), np.round(images * 255).astype(np.uint8), labels)
        if number % 8 == 7 or number == shards - 1:
            total = sum(f.stat().st_size for f in folder.glob("*.tfrecord"))
            log(f"wrote {number + 1}/{shards} shards, {total / 1e9:.2f} GB ({time.monotonic() - started:.0f}s)")
    written.write_text(json.dumps(manifest))


def linked_subset(source: Path, folder: Path, shards: int) -> Path:
    """The first `shards` shards of `source` as hard links (no copy) in their own folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for shard in sorted(source.glob("*.tfrecord"))[:shards]:
        os.link(shard, folder / shard.name)
    return folder


def data_spec(path: str, image_size: int, streamed: bool) -> dict:
    spec = {"source": "tfrecord", "path": path, "shape": [image_size, image_size, 3], "split": {"by": "key_hash"}}
    return {**spec, "streaming": STREAMING} if streamed else spec


def run_case(case: str, path: str, data_bytes: int, args, env: dict) -> dict:
    """Train one epoch and validate, each in a child process: the row of the table."""
    data = data_spec(path, args.image_size, streamed=case != "in memory")
    train_config = {
        "model": {"zoo": "small_cnn"},
        "data": data,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": 0.002, "seed": 0},
    }
    output = WORK / "runs" / case.replace(" ", "-")
    shutil.rmtree(output, ignore_errors=True)
    python = [sys.executable, "-m", "modelpress", "step"]
    log(f"{case}: train on {data_bytes / 1e9:.2f} GB at {path}")
    status, train_rss, train_wall, stderr = run_measured(
        [*python, "train", "--config", json.dumps(train_config), "--output", str(output / "train")], env
    )
    if status != 0:
        raise SystemExit(f"{case}: train failed:\n{stderr[-3000:]}")
    artifact = json.loads((output / "train" / "artifact.json").read_text())
    validate_config = {"name": "train", "data": data, "evaluation": {"latency_runs": 20, "warmup_runs": 2}}
    log(f"{case}: validate")
    status, validate_rss, validate_wall, stderr = run_measured(
        [*python, "validate", "--config", json.dumps(validate_config), "--input", f"model={output / 'train'}",
         "--output", str(output / "validate")], env
    )
    if status != 0:
        raise SystemExit(f"{case}: validate failed:\n{stderr[-3000:]}")
    blessing = json.loads((output / "validate" / "blessing.json").read_text())
    examples, fit_seconds = artifact["details"]["train_examples"], artifact["metrics"]["train_seconds"]
    return {
        "case": case,
        "data_gb": round(data_bytes / 1e9, 3),
        "train_examples": examples,
        "test_examples": blessing["metrics"]["test_examples"],
        "train_peak_rss_mb": round(train_rss),
        "validate_peak_rss_mb": round(validate_rss),
        "train_examples_per_s": round(examples * args.epochs / fit_seconds, 1),
        "fit_seconds": fit_seconds,
        "train_wall_seconds": round(train_wall, 1),
        "validate_wall_seconds": round(validate_wall, 1),
        "test_accuracy": blessing["metrics"]["accuracy"],
    }


def goals(rows: dict[str, dict]) -> list[dict]:
    """One entry per goal of the issue: the goal, the value reached as text, met or not."""
    large, small = rows["stream local, all"], rows["stream local, 1/10"]
    memory, subset, s3 = rows["in memory"], rows["stream local, subset"], rows["stream s3"]
    peak = max(large["train_peak_rss_mb"], large["validate_peak_rss_mb"])
    limit_mb = MEMORY_LIMIT_BYTES / (1 << 20)
    ratio_local = subset["train_examples_per_s"] / memory["train_examples_per_s"]
    ratio_s3 = s3["train_examples_per_s"] / memory["train_examples_per_s"]
    growth = max(
        abs(large[key] - small[key]) / small[key] for key in ("train_peak_rss_mb", "validate_peak_rss_mb")
    )
    return [
        {"goal": f"peak RSS of train and validate <= 2 GB over {large['data_gb']:.1f} GB of shards",
         "reached": f"{peak} MiB (train {large['train_peak_rss_mb']}, validate {large['validate_peak_rss_mb']}); data "
                    f"{large['data_gb'] * 1e9 / MEMORY_LIMIT_BYTES:.2f}x the limit of {limit_mb:.0f} MiB",
         "value": peak, "met": peak <= limit_mb and large["data_gb"] * 1e9 >= 4 * MEMORY_LIMIT_BYTES},
        {"goal": "streaming throughput >= 80% of the in-memory path's (same model, same subset)",
         "reached": f"{ratio_local:.0%} ({subset['train_examples_per_s']:.0f} vs {memory['train_examples_per_s']:.0f} examples/s)",
         "value": ratio_local, "met": ratio_local >= 0.8},
        {"goal": "streaming from S3 >= 60% of the in-memory path's throughput",
         "reached": f"{ratio_s3:.0%} ({s3['train_examples_per_s']:.0f} vs {memory['train_examples_per_s']:.0f} examples/s)",
         "value": ratio_s3, "met": ratio_s3 >= 0.6},
        {"goal": "the same spec on a 10x larger data set changes memory by < 10%",
         "reached": f"{growth:.1%} ({small['data_gb']:.2f} GB -> {large['data_gb']:.2f} GB: train {small['train_peak_rss_mb']} -> "
                    f"{large['train_peak_rss_mb']} MiB, validate {small['validate_peak_rss_mb']} -> {large['validate_peak_rss_mb']} MiB)",
         "value": growth, "met": growth < 0.1},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local-gb", type=float, default=8.0, help="GB (1e9 bytes) of shards on local disk (default 8)")
    parser.add_argument("--s3-gb", type=float, default=1.0, help="GB of those shards uploaded to the S3 endpoint (default 1)")
    parser.add_argument("--subset-shards", type=int, default=4, help="shards of the in-memory comparison (default 4)")
    parser.add_argument("--image-size", type=int, default=64, help="height and width of the RGB images (default 64)")
    parser.add_argument("--shard-mb", type=int, default=128, help="MiB per shard (default 128)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    started, load_before = time.monotonic(), machine()
    per_shard = (args.shard_mb << 20) // (args.image_size**2 * 3 + RECORD_OVERHEAD)
    shard_bytes = per_shard * (args.image_size**2 * 3 + RECORD_OVERHEAD)
    shards = math.ceil(args.local_gb * 1e9 / shard_bytes)
    tenth, s3_shards = max(1, round(shards / 10)), max(1, math.ceil(args.s3_gb * 1e9 / shard_bytes))
    spec = GeneratedData(source="generated", samples=shards * per_shard, image_size=(args.image_size,) * 2, classes=10, seed=0)
    large = WORK / "shards"
    write_shards(large, spec, shards, per_shard)
    folders = {"all": large, "1/10": linked_subset(large, WORK / "tenth", tenth),
               "subset": linked_subset(large, WORK / "subset", args.subset_shards)}
    size = {name: sum(f.stat().st_size for f in folder.glob("*.tfrecord")) for name, folder in folders.items()}
    env = {**os.environ, "MODELPRESS_CACHE": str(WORK / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    server, endpoint = start_s3_server()
    try:
        env.update({"AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS})
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS})
        storage.configure(None)
        storage.s3_client().create_bucket(Bucket="scale")
        uploaded = sorted(large.glob("*.tfrecord"))[:s3_shards]
        log(f"uploading {len(uploaded)} shards ({sum(f.stat().st_size for f in uploaded) / 1e9:.2f} GB) to {endpoint}")
        for shard in uploaded:
            storage.put_file(shard, f"s3://scale/shards/{shard.name}", storage.transfer_config(64, 4), retries=3)
        cases = [
            ("in memory", str(folders["subset"]), size["subset"]),
            ("stream local, subset", str(folders["subset"]), size["subset"]),
            ("stream s3", "s3://scale/shards/", sum(f.stat().st_size for f in uploaded)),
            ("stream local, 1/10", str(folders["1/10"]), size["1/10"]),
            ("stream local, all", str(large), size["all"]),
        ]
        rows = {case: run_case(case, path, data_bytes, args, env) for case, path, data_bytes in cases}
    finally:
        server.terminate()
        server.wait(30)
    goal_rows = goals(rows)
    columns = [("case", "case", None), ("data GB", "data_gb", None), ("train ex", "train_examples", None),
               ("test ex", "test_examples", None), ("train RSS MiB", "train_peak_rss_mb", None),
               ("validate RSS MiB", "validate_peak_rss_mb", None), ("train ex/s", "train_examples_per_s", None),
               ("fit s", "fit_seconds", None), ("train wall s", "train_wall_seconds", None),
               ("validate wall s", "validate_wall_seconds", None), ("test acc", "test_accuracy", None)]
    shown = [{**row, "test_accuracy": f"{row['test_accuracy']:.4f}"} for row in rows.values()]
    print(text_table(shown, columns, title="== data larger than memory: one epoch of small_cnn, then validate =="))
    print(text_table([{**g, "met": "yes" if g["met"] else "NO"} for g in goal_rows],
                     [("goal", "goal", None), ("reached", "reached", None), ("met", "met", None)], title="== goals =="))
    seconds = round(time.monotonic() - started)
    load_after = machine()["load_average_1_5_15"]
    print(f"machine: {load_before['cpu']}, {load_before['cores']} cores, load average {load_before['load_average_1_5_15']} "
          f"before, {load_after} after; {seconds}s")
    write_json(args.out, {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": {**load_before, "load_average_after": load_after},
        "seconds": seconds, "parameters": {**vars(args), "out": str(args.out), "shards": shards, "examples_per_shard": per_shard,
                                           "streaming": STREAMING}, "rows": list(rows.values()), "goals": goal_rows,
    })
    return 0 if all(g["met"] for g in goal_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
