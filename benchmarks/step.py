"""Speed of the training step: the template's `Trainer.fit` against a bare PyTorch loop, side by side.

    python benchmarks/step.py [steps=40] [warmup=5] [reps=5] [threads=1] [key=value ...]

Any other argument is a `python -m src.train` override (default: the default run: unet_small on the built-in 48 px
data, batch 32, AdamW, poly schedule, `trainer.precision=auto`, channels-last). Both sides train on the same
batches, drawn once from the run's training DataLoader before any timing, served by the same DataLoader over the
list (so both pay the same, negligible, fetch):
- bare: the same network (channels-last), AdamW over the same parameter groups, the poly schedule, the same
  autocast, `F.cross_entropy`, zero_grad/backward/step; the batch goes through the DataModule's transfer hook;
- template: `Trainer.fit` with the module, callbacks and loggers built by src/run.py exactly as `src.train` builds
  them (progress bar, checkpoints, LR monitor, CSV logger, train metrics), validation on one batch after the timed
  steps.
ms/step is the time from the start of step `warmup` to the start of the last step, divided by the steps between
(so set-up, the first steps and the validation at the end are not counted). The two sides alternate `reps` times,
so that load from other processes hits both; the medians and their ratio are printed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from benchmarks.settings import split_args  # noqa: E402
from src.models.optim import param_groups  # noqa: E402
from src.run import build_datamodule, build_module, build_trainer, instantiate  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402


class Batches(Dataset):
    """A list of ready batches, served one per index (DataLoader with batch_size=None)."""

    def __init__(self, batches: list[dict]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        return self.batches[i]


def loader(batches: list[dict]) -> DataLoader:
    return DataLoader(Batches(batches), batch_size=None, shuffle=False)


def now(device: torch.device | None = None) -> float:
    """Wall-clock seconds, after the device's queued work has finished (so that a step's time is its own)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))


class BareStep:
    """One step of a plain PyTorch training loop: the template's network, optimizer, schedule and autocast."""

    def __init__(self, cfg, datamodule, total_steps: int, device: torch.device):
        torch.manual_seed(cfg.seed)
        self.net = instantiate(cfg.model).to(device, memory_format=torch.channels_last).train()
        make_optimizer = instantiate(cfg.optimizer)
        lr, weight_decay = make_optimizer.keywords["lr"], make_optimizer.keywords["weight_decay"]
        self.optimizer = make_optimizer(param_groups(self.net, lr=lr, weight_decay=weight_decay))
        self.scheduler = instantiate(cfg.scheduler)(self.optimizer, total_steps=total_steps)
        self.dtype = autocast_dtype(cfg.trainer.precision)
        self.device, self.datamodule = device, datamodule

    def __call__(self, batch: dict) -> None:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        hook = getattr(self.datamodule, "on_after_batch_transfer", None)
        if hook is not None:
            batch = hook(batch, 0)
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.net(x)
            loss = F.cross_entropy(logits, batch["mask"].long(), ignore_index=self.datamodule.ignore_index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()


class Paired(L.Callback):
    """At the start of each template step, run the bare loop's step on the same batch; time both.

    The template's step k is everything Lightning does from the end of bare step k to the start of bare step
    k+1 (fetching, transfer hooks, training_step, logging, callbacks, optimizer step, progress bar).
    """

    def __init__(self, cfg, datamodule, batches: list[dict]):
        self.cfg, self.datamodule, self.batches = cfg, datamodule, batches
        self.bare_times: list[float] = []
        self.template_times: list[float] = []
        self.bare: BareStep | None = None
        self.last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.bare is None:
            self.bare = BareStep(self.cfg, self.datamodule, len(self.batches), pl_module.device)
        start = now(pl_module.device)
        if self.last_end is not None:
            self.template_times.append(start - self.last_end)
        self.bare(self.batches[batch_idx])
        self.last_end = now(pl_module.device)
        self.bare_times.append(self.last_end - start)


def paired_run(cfg, datamodule, batches: list[dict], val_batches: list[dict]) -> Paired:
    """`Trainer.fit` of the module, callbacks and loggers src/run.py builds, with the bare loop run beside it."""
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as out:
        cfg.paths.output_dir = out
        module = build_module(cfg, datamodule)
        paired = Paired(cfg, datamodule, batches)
        trainer = build_trainer(cfg, extra_callbacks=[paired])
        datamodule.train_dataloader = lambda: loader(batches)
        datamodule.val_dataloader = lambda: loader(val_batches)
        trainer.fit(module, datamodule=datamodule)
    return paired


def main(argv: list[str]) -> dict:
    settings, overrides = split_args(argv, {"steps": "40", "warmup": "5", "reps": "5", "threads": "1"})
    steps, warmup, reps = int(settings["steps"]), int(settings["warmup"]), int(settings["reps"])
    torch.set_num_threads(int(settings["threads"]))
    base = ["trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "trainer.limit_val_batches=1"]
    cfg = compose_config("train", base + overrides, output_dir=tempfile.mkdtemp(prefix="step_benchmark_"))
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    train_iter = iter(datamodule.train_dataloader())
    batches = [next(train_iter) for _ in range(steps)]
    val_batches = [next(iter(datamodule.val_dataloader()))]
    print(
        f"model={cfg.model._target_.rsplit('.', 1)[-1]} data={cfg.data._target_.rsplit('.', 1)[-1]} "
        f"batch={len(batches[0]['image'])} image={tuple(batches[0]['image'].shape[1:])} "
        f"precision={cfg.trainer.precision} threads={torch.get_num_threads()} steps={steps} (first {warmup} not "
        f"timed) reps={reps} ({' '.join(overrides)})"
    )
    rows, bare, template, ratios = [], [], [], []
    for rep in range(reps):
        paired = paired_run(cfg, datamodule, batches, val_batches)
        b, t = paired.bare_times[warmup:], paired.template_times[warmup:]  # t[k] ran right after b[k]
        b = b[: len(t)]
        bare, template, ratios = bare + b, template + t, ratios + [y / x for x, y in zip(b, t)]
        rows.append(summary(b, t, [y / x for x, y in zip(b, t)], f"rep {rep}"))
        print(rows[-1]["line"], flush=True)
    result = summary(bare, template, ratios, f"all {len(ratios)} steps")
    print("\n| steps | bare ms/step | template ms/step | template / bare |\n|---|---:|---:|---:|")
    for row in rows + [result]:
        print(row["line"])
    print(f"template / bare = {result['ratio']:.3f} (median of per-step ratios; target <= 1.03)")
    return result


def summary(bare: list[float], template: list[float], ratios: list[float], name: str) -> dict:
    """Medians: ms per step of each side, and of the per-step ratio (each template step over the bare step run
    just before it, so that a slow spell of the machine hits both)."""
    out = {"bare_ms": 1000 * statistics.median(bare), "template_ms": 1000 * statistics.median(template)}
    out["ratio"] = statistics.median(ratios)
    out["line"] = f"| {name} | {out['bare_ms']:.1f} | {out['template_ms']:.1f} | {out['ratio']:.3f} |"
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
