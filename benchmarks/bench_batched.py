"""Batched trials (issue 11): K trials as one group vs the same K trials one after another as plain PyTorch loops.

Both sides run on one torch thread, the same steps, seeds and lrs; rounds alternate between the two and the ratio is
the median over rounds. No tracking on either side (the engine writes to a NullTracker). Also prints the memory one
digits_mlp Adam trial adds to a group, and, where CUDA exists, the same cases on the GPU.

    PYTHONPATH=. python benchmarks/bench_batched.py [--repeats 3]
"""

import argparse
import statistics
import time

import torch

from benchmarks.common import timed
from harness.batched.engine import _Group, train_group, trial_bytes
from harness.batched.spec import TrialSpec
from harness.tasks import create_task
from harness.tracking.base import NullTracker

CASES = [  # task, optimizer, lr range, K, batch size, steps, evaluations
    ("quadratic", "sgd", (0.01, 0.3), 128, 1, 100, 20),
    ("linreg_1d", "sgd", (0.01, 0.3), 128, 32, 100, 20),
    ("linreg_10d", "sgd", (0.001, 0.03), 128, 32, 100, 20),
    # Training throughput: one evaluation at the end (an evaluation of the 360 validation digits costs 4 training
    # steps' worth of GEMMs, the same on both sides, and would hide the training step's ratio).
    ("digits_mlp", "adam", (1e-4, 1e-2), 32, 32, 90, 1),
]
HPARAMS = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
    "adam": {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
}


def specs_for(task_name, optimizer, lrs, k, batch_size, steps, evals=20, device="cpu") -> list[TrialSpec]:
    task = create_task(task_name)
    splits = task.make_data()
    splits = type(splits)(tuple(t.to(device) for t in splits.train), tuple(t.to(device) for t in splits.val))
    size = splits.train[0].shape[0]
    batch_size = min(batch_size, size)
    low, high = lrs
    return [
        TrialSpec(
            task=task,
            splits=splits,
            optimizer=optimizer,
            lr=low * (high / low) ** (i / max(1, k - 1)),
            hparams=HPARAMS[optimizer],
            seed=i,
            batch_size=batch_size,
            shuffle=True,
            total_steps=steps,
            steps_per_epoch=-(-size // batch_size),
            eval_every=max(1, steps // evals),
            device=torch.device(device),
        )
        for i in range(k)
    ]


def plain_trial(spec: TrialSpec) -> None:
    """What a user writes by hand for one trial: randperm slices, torch.optim, loss.item() kept, ~20 evaluations."""
    task = spec.task
    torch.manual_seed(spec.seed)
    model = task.make_model().to(spec.device)
    hp = dict(spec.hparams)
    if "betas" in hp:
        hp["betas"] = tuple(hp["betas"])
    cls = torch.optim.SGD if spec.optimizer == "sgd" else torch.optim.Adam
    optimizer = cls(model.parameters(), lr=spec.lr, **hp)
    generator = torch.Generator().manual_seed(spec.seed)
    train, val = spec.splits.train, spec.splits.val
    size, losses, order = train[0].shape[0], [], None
    for step in range(spec.total_steps):
        start = (step % spec.steps_per_epoch) * spec.batch_size
        if start == 0 and size > 1:
            order = torch.randperm(size, generator=generator)
        batch = tuple(t[order[start : start + spec.batch_size]] for t in train) if size > 1 else train
        optimizer.zero_grad()
        loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % spec.eval_every == 0:
            task.evaluate(model, val)


def sequential(specs: list[TrialSpec]) -> None:
    for spec in specs:
        plain_trial(spec)


def batched(specs: list[TrialSpec]) -> None:
    train_group(specs, [NullTracker() for _ in specs])


def measure(specs: list[TrialSpec], repeats: int) -> tuple[float, float, float]:
    """(sequential s, batched s, median ratio), interleaved rounds."""
    seq, bat = [], []
    for _ in range(repeats):
        seq.append(timed(lambda: sequential(specs)))
        bat.append(timed(lambda: batched(specs)))
    ratios = [s / b for s, b in zip(seq, bat)]
    return statistics.median(seq), statistics.median(bat), statistics.median(ratios)


def measured_trial_bytes(specs: list[TrialSpec]) -> float:
    """Bytes per trial of the tensors a group holds after a step: parameters, gradients, optimizer state and
    workspaces (the training batch's activations are freed by then)."""
    group = _Group(specs, [NullTracker() for _ in specs], sync_every=1)
    group.total = 1
    group.run()
    model = group.model
    tensors = list(model.update_tensors) + [model.grad_flat]  # parameters and the gradient block
    for name in ("exp_avg", "exp_avg_sq", "max_sq", "ws_denom", "ws_num"):
        tensors += getattr(group.opt, name, [])
    for steps in model._steps.values():  # the training step's activation and gradient buffers
        for step in steps:
            tensors += [
                t for t in (getattr(step, "out", None), getattr(step, "grad_x", None)) if t is not None
            ]
    return sum(t.untyped_storage().nbytes() for t in tensors) / len(specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats} interleaved rounds")
    print(f"{'case':32s} {'sequential':>11s} {'batched':>9s} {'ratio':>7s}")
    for task, optimizer, lrs, k, batch_size, steps, evals in CASES:
        specs = specs_for(task, optimizer, lrs, k, batch_size, steps, evals)
        seq, bat, ratio = measure(specs, args.repeats)
        label = f"{task} {optimizer} K={k} {steps} steps"
        print(f"{label:32s} {seq:10.3f}s {bat:8.3f}s {ratio:6.1f}x")
    specs = specs_for("digits_mlp", "adam", (1e-4, 1e-2), 32, 32, 1)
    estimate = trial_bytes(specs[0]) / 2**20
    held = measured_trial_bytes(specs) / 2**20
    print(f"digits_mlp Adam, memory per trial beyond the shared data: {held:.2f} MiB held after a step, ")
    print(f"  {estimate:.2f} MiB as the memory budget counts it (with a batch's activations)")
    if torch.cuda.is_available():
        print(f"CUDA: {torch.cuda.get_device_name()}")
        for task, optimizer, lrs, k, batch_size, steps, evals in CASES:
            for gpu_k in sorted({k, 128}):
                specs = specs_for(task, optimizer, lrs, gpu_k, batch_size, steps, evals, device="cuda")
                batched(specs)  # warm-up
                torch.cuda.synchronize()
                start = time.perf_counter()
                batched(specs)
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                one = specs[:1]
                start = time.perf_counter()
                sequential(one)
                torch.cuda.synchronize()
                single = time.perf_counter() - start
                label = f"{task} {optimizer} K={gpu_k}"
                print(
                    f"  {label:30s} group {elapsed:.3f}s, one plain trial {single:.3f}s: "
                    f"{gpu_k * single / elapsed:.1f}x trials/s"
                )


if __name__ == "__main__":
    main()
