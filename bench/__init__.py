"""ModelPress benchmarks: `make bench-techniques` (bench.techniques) and `make bench` (bench.reference), both on the
shared harness (bench.harness). Results land in bench/results/."""
