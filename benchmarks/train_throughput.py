"""Stage-2 training throughput (samples/s): 1 process vs 2 data-parallel processes on the CPU.

What runs: the stage-2 loss (`comfy_star.train.stage2_ar.ar_loss`: next-token cross-entropy on the VQ
tokens of Shapes-world captions/images) on the embedded star-shapes model, through the project's
training loop (`comfy_star.train.runner.train`, accelerate; DDP over gloo with 2 processes). Trainable:
what stage 2 trains, the stack + generation adapter + head; the base and the VQ stay frozen.
Batches are made before the clock starts (make_batch is a pure function of (step, rank)), so the
timing is forward + backward + all-reduce + AdamW, not image drawing. Each process uses one thread.

  1 process:   python this worker            --batch B       (B samples a step)
  2 processes: torchrun --nproc_per_node 2 this worker --batch B   (2 B samples a step, DDP)
               (`accelerate launch --cpu` needs mpirun for that; torchrun does not, as in the tests)
Each does --warmup steps, then --steps timed steps; the runs are interleaved --rounds times and the
median samples/s of each is printed with the ratio. With CUDA, one process on the GPU is timed too.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py [--steps 10] [--warmup 2] [--batch 8] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(a):
    import torch
    torch.set_num_threads(1)
    from comfy_star import components as comps
    from comfy_star.pipeline import DEFAULT_CHECKPOINT
    from comfy_star.train import stage2_ar
    from comfy_star.train.prefetch import to_device
    from comfy_star.train.runner import TrainArgs, launch_info, train

    rank, world, device = launch_info()
    device = torch.device(a.device if world == 1 else device)
    parts = comps.load(DEFAULT_CHECKPOINT)  # frozen, float32
    for m in (parts.ar, parts.vq):
        m.to(device)
    for m in (parts.ar.stack, parts.ar.adapter, parts.ar.head):
        m.requires_grad_(True)
    parts.ar.train()
    steps = a.warmup + a.steps
    make = stage2_ar.make_batch_fn(parts.image_proc, parts.config.image_size, a.batch, seed=0)
    batches = {s: make(s, rank, world) for s in range(steps)}  # before the clock
    loss = lambda m, b: stage2_ar.ar_loss(m, parts, to_device(b, device), device)
    marks = {}

    def on_step(done, total, stats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        if done in (a.warmup, steps):
            marks[done] = time.perf_counter()

    args = TrainArgs(out_dir=None, steps=steps, lr=1e-4, batch_size=a.batch, log_every=0, save_every=0)
    train(parts.ar, lambda s, r=0, w=1: batches[s], loss, args, on_step=on_step)
    seconds = marks[steps] - marks[a.warmup]
    if rank == 0:
        n = sum(p.numel() for p in parts.ar.parameters() if p.requires_grad)
        print("RESULT " + json.dumps({"world": world, "device": str(device), "samples_per_s":
                                      a.batch * world * a.steps / seconds, "s_per_step": seconds / a.steps,
                                      "trainable": n}), flush=True)


def run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="bench", choices=["bench", "worker"])
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="samples per process per step")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.mode == "worker":
        return worker(a)

    import torch
    threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cpu_env = dict(env, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="")  # gloo on the CPU, as in the tests
    common = [__file__, "worker", "--steps", str(a.steps), "--warmup", str(a.warmup), "--batch", str(a.batch)]
    one = [sys.executable, *common, "--device", "cpu"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common]
    print(f"stage 2 on star-shapes, batch {a.batch} per process, {a.warmup} warm-up + {a.steps} timed steps, "
          f"OMP_NUM_THREADS={threads} (one thread per process), {os.cpu_count()} CPUs", flush=True)
    res = {1: [], 2: []}
    for r in range(a.rounds):  # interleaved: a busy machine slows both alike
        for world, cmd in ((1, one), (2, two)):
            out = run(cmd, cpu_env)
            res[world].append(out)
            print(f"  round {r + 1}: {world} process(es)  {out['samples_per_s']:6.2f} samples/s  "
                  f"({out['s_per_step']:.2f} s/step, {world * a.batch} samples/step)", flush=True)
    s1 = statistics.median(o["samples_per_s"] for o in res[1])
    s2 = statistics.median(o["samples_per_s"] for o in res[2])
    print(f"\n== stage-2 training throughput, CPU, median of {a.rounds} (a shared machine: another job was "
          f"using the CPUs) ==")
    print(f"trainable parameters: {res[1][0]['trainable']:,} (stack + adapter + head)")
    print("| processes | samples/s | s/step | samples/step |")
    print("|---:|---:|---:|---:|")
    for world, s in ((1, s1), (2, s2)):
        step = statistics.median(o["s_per_step"] for o in res[world])
        print(f"| {world} | {s:.2f} | {step:.2f} | {world * a.batch} |")
    print(f"2 processes / 1 process: {s2 / s1:.2f}x (ideal 2x on 2 free cores)")
    if torch.cuda.is_available():
        out = run([sys.executable, *common, "--device", "cuda"], env)
        print(f"CUDA ({torch.cuda.get_device_name()}), 1 process: {out['samples_per_s']:.1f} samples/s "
              f"({out['s_per_step'] * 1e3:.0f} ms/step); / CPU 1 process {out['samples_per_s'] / s1:.1f}x")
    else:
        print("CUDA: not available here (not measured)")


if __name__ == "__main__":
    sys.exit(main())
