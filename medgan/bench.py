"""``medgan bench <name>``: throughput / latency / memory benchmarks (scripts, not timed tests).

Each benchmark lives next to the code it measures and provides ``add_bench_cli(subparsers)``;
this module only gathers them. Benchmarks print ratios measured side by side in one run, and
absolute numbers only when they ran on a GPU (the device name is printed with them).
"""

from __future__ import annotations

from medgan import train_bench
from medgan.metrics import bench as metric_bench

BENCHES = (
    train_bench,   # medgan bench train --model dcgan --size 128 --batch 64
    metric_bench,  # medgan bench fid --n 10000
)


def add_cli(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (img/s, s/kimg, peak memory, FID speed)")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    bench_sub.required = True
    for module in BENCHES:
        module.add_bench_cli(bench_sub)
