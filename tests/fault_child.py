"""Run by tests/test_faults.py in a child process: train a tiny run with one fault planted, and die
by SIGKILL at it, the way the OOM killer or a lost machine ends a process (no handler runs).

    python fault_child.py MODE ARG CONFIG_YAML RUN_DIR

MODE/ARG:
    step N        after optimizer step N
    timer S       S seconds after the first step (anywhere: a step, validation, a write)
    fsync N       in the N-th write of a temporary file: the file is cut to half its size first
                  (a write that was under way)
    prerename N   before the N-th rename of a checkpoint file (temporary file complete, not in place)
    rename N      just after the N-th rename of a checkpoint file (e.g. train-state-last moved to
                  train-state-prev and the new one not yet in place)
    hold S        take the run directory's lock, train with S seconds of sleep per step (a live
                  second process for the lock tests); prints "training" at the first step
"""
import os
import signal
import sys
import threading
import time

import cifarlab


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main(mode: str, arg: str, config: str, run_dir: str) -> None:
    callbacks = ()
    count = [0]
    if mode == "step":
        k = int(arg)
        callbacks = (lambda ev, info, m: die() if ev == "step" and info["global_step"] == k else None,)
    elif mode in ("timer", "hold"):
        def on_step(ev, info, m):
            if ev != "step":
                return
            if mode == "hold":
                if count[0] == 0:
                    print("training", flush=True)
                count[0] += 1
                time.sleep(float(arg))
            elif count[0] == 0:
                count[0] = 1
                threading.Timer(float(arg), die).start()
        callbacks = (on_step,)
    elif mode == "fsync":
        real_fsync = os.fsync

        def fsync(fd):
            if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
                count[0] += 1
                if count[0] == int(arg):
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    die()
            return real_fsync(fd)
        os.fsync = fsync
    elif mode in ("rename", "prerename"):
        real_replace = os.replace

        def replace(src, dst):
            if os.path.basename(str(dst)).startswith(("checkpoint-", "train-state-")):
                count[0] += 1
                if count[0] == int(arg):
                    if mode == "rename":
                        real_replace(src, dst)
                    die()
            return real_replace(src, dst)
        os.replace = replace
    cifarlab.train(config, run_dir=run_dir, callbacks=callbacks)
    print("finished without the fault", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
