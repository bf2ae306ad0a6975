"""How often a 2-process torchrun job aborts at exit after DDP, with and without cifarlab's shutdown.

Each launch starts ``torchrun --standalone --nproc-per-node 2`` on this file's worker: gloo, a
DDP-wrapped ``Linear`` trained 5 steps, then the end of a run: either ``--exit-via barrier``
(a plain ``dist.all_reduce`` of a Python tensor, ``dist.barrier()``, ``dist.destroy_process_group()``:
cifarlab's ``sum_across`` and ``shutdown`` before the fix) or ``--exit-via cifarlab`` (those two
functions today). Busy-loop processes compete for the cores while it runs, as a loaded CI machine does; the
abort ("terminate called without an active exception", a gloo worker thread freeing a finished
work while the interpreter shuts down) needs that contention to show.

    python benchmarks/ddp_exit.py --exit-via barrier --launches 20
    python benchmarks/ddp_exit.py --exit-via cifarlab --launches 20

Prints the number of launches that failed and how many of those printed the abort.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def worker(how: str) -> None:
    import torch
    import torch.distributed as dist

    from cifarlab.training.distributed import DistEnv, shutdown, sum_across
    dist.init_process_group("gloo")
    env = DistEnv(dist.get_rank(), dist.get_world_size())
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(10, 10))
    for _ in range(5):
        model(torch.randn(4, 10)).sum().backward()
    # the epoch-end sums, then the end of the run
    if how == "barrier":  # the code before the fix: a plain all-reduce and dist.barrier()
        dist.all_reduce(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        dist.barrier()
        dist.destroy_process_group()
    else:
        sum_across([1.0, 2.0, 3.0], env)
        shutdown(env)


def spin() -> None:
    while True:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exit-via", choices=("barrier", "cifarlab"), default="cifarlab",
                    help="end each run the old way (plain all-reduce + dist.barrier) or with cifarlab's "
                         "sum_across + shutdown (default)")
    ap.add_argument("--launches", type=int, default=20, help="torchrun launches (default 20, about 8 s each)")
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 2, help="busy-loop processes (default: one per CPU)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.exit_via)
        return 0
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(a.busy)]
    for p in spinners:
        p.start()
    failed = aborted = 0
    other = ""
    t0 = time.perf_counter()
    try:
        for _ in range(a.launches):
            p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                __file__, "--worker", "--exit-via", a.exit_via], capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
            failed += p.returncode != 0
            aborted += "terminate called" in p.stderr
            if p.returncode and "terminate called" not in p.stderr:
                other = other or p.stderr[-2000:]
    finally:
        for p in spinners:
            p.terminate()
    print(f"exit via {a.exit_via}: {failed} of {a.launches} launches failed, {aborted} with the abort "
          f"({a.busy} busy-loop processes, {time.perf_counter() - t0:.0f} s)")
    if other:
        print(f"a launch failed without the abort; its stderr ends:\n{other}", file=sys.stderr)
    return 1 if other else 0


if __name__ == "__main__":
    raise SystemExit(main())
