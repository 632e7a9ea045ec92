"""Train the DCGAN: config, data, model, optimizers, loop, checkpoints, top to bottom.

Runs on one CPU or GPU, or under torchrun with DistributedDataParallel (nccl on GPUs, gloo on
CPUs); rank 0 writes checkpoints and logs. Exact resume: the noise of step s is drawn from a
generator seeded by (seed, rank, s) and the data order of epoch e by (seed, e), so a checkpoint's
weights, optimizer states and (epoch, batch) position continue the run bit for bit on CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dcgan.train.checkpoint import CHECKPOINT_DIR, LATEST, save_checkpoint
from dcgan.train.config import (
    EVAL_FIELDS,
    IDENTITY_FIELDS,
    ConfigError,
    Dataset,
    Device,
    EvalFeatures,
    EvalMetric,
    Precision,
    Split,
    TrainConfig,
)
from dcgan.train.data import SPLIT_DATASETS, Batches, DataSpec, native_channels, to_model_range
from dcgan.train.evaluation import BestScore, Score, open_evaluator, validate_evaluation
from dcgan.train.model import Discriminator, Generator, ModelConfig, init_weights
from dcgan.train.runlog import RUN_ENTRIES, RunLog

# ----------------------------------------------------------------------------- config


class ResourceError(Exception):
    """What this machine cannot give the run: a writable --out, memory enough for the networks."""


MAX_WORKERS = 128  # decoding processes; more only cost memory
MAX_SAMPLES = 1024  # images in a sample grid (128 rows of 8)
SEED_LIMIT = 2**32  # NumPy takes 32-bit seeds


def model_config_of(config: TrainConfig) -> ModelConfig:
    """The networks' arguments; ConfigError on a bad size, channel count or width."""
    if config.channels is None:
        raise ConfigError("channels are resolved by resolve_config")
    return _model_config(config, config.channels)


def _model_config(config: TrainConfig, channels: int) -> ModelConfig:
    try:
        return ModelConfig(config.nz, config.ngf, config.ndf, channels, config.image_size)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_choice(option: str, value: str, choices: type[StrEnum]) -> None:
    names = [choice.value for choice in choices]
    if value not in names:
        raise ConfigError(f"--{option} must be {', '.join(names[:-1])} or {names[-1]}, not {value}")


def validate(config: TrainConfig) -> None:
    """Each setting on its own, before any file is read: a ConfigError names the option."""
    _model_config(config, 1 if config.channels is None else config.channels)
    lowest = {"batch_size": 1, "epochs": 1, "keep": 1, "log_every": 1, "samples": 1}
    lowest |= {"workers": 0, "save_every": 0}
    for name, low in lowest.items():
        if getattr(config, name) < low:
            raise ConfigError(
                f"--{_option(name)} must be at least {low}, not {getattr(config, name)}"
            )
    if config.max_steps is not None and config.max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, not {config.max_steps}")
    for name, high in (("workers", MAX_WORKERS), ("samples", MAX_SAMPLES)):
        if getattr(config, name) > high:
            raise ConfigError(f"--{name} must be at most {high}, not {getattr(config, name)}")
    if not 0 <= config.seed < SEED_LIMIT:
        raise ConfigError(f"--seed must be between 0 and {SEED_LIMIT - 1}, not {config.seed}")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ConfigError(f"--lr must be a positive number, not {config.lr}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(config, name) < 1:  # NaN fails this too
            raise ConfigError(
                f"--{name} must be at least 0 and below 1, not {getattr(config, name)}"
            )
    if not (math.isfinite(config.preload_limit_mb) and config.preload_limit_mb >= 0):
        raise ConfigError(
            "--preload-limit-mb must be a finite number of at least 0, "
            f"not {config.preload_limit_mb}"
        )
    for option, value in (("data-root", config.data_root), ("out", config.out)):
        if value is not None and not str(value).strip():
            raise ConfigError(f"--{option} is empty")
    check_choice("dataset", config.dataset, Dataset)
    check_choice("split", config.split, Split)
    if config.split != Split.train and config.dataset not in SPLIT_DATASETS:
        raise ConfigError(
            f"--split {config.split} is for {', '.join(SPLIT_DATASETS)}; "
            f"--dataset {config.dataset} has one set of images"
        )
    check_choice("device", config.device, Device)
    check_choice("precision", config.precision, Precision)
    check_choice("eval-metric", config.eval_metric, EvalMetric)
    if config.eval_features is not None:
        check_choice("eval-features", config.eval_features, EvalFeatures)
    validate_evaluation(config)


def _option(name: str) -> str:
    return name.replace("_", "-")


def resolve_config(given: dict[str, Any], resumed: dict[str, Any] | None = None) -> TrainConfig:
    """The run's settings: defaults, then a resumed run's own, then those given explicitly.

    On resume, an identity setting given with a different value is an error, not a silent change,
    and --epochs given without --max-steps replaces the run's step limit: the run goes on to
    the epochs asked for. Every setting is checked before any data is read.
    """
    known = {field.name for field in fields(TrainConfig)}
    base = TrainConfig()
    if resumed is not None:
        base = replace(base, **{key: value for key, value in resumed.items() if key in known})
        for key in IDENTITY_FIELDS:
            if key in given and given[key] != getattr(base, key):
                raise ConfigError(
                    f"the run being resumed has {key}={getattr(base, key)!r}; "
                    f"drop --{_option(key)} or start a new run"
                )
        if "epochs" in given and "max_steps" not in given:
            given = {**given, "max_steps": None}
    config = replace(base, **given)
    if config.eval_every == 0:
        unused = [name for name in EVAL_FIELDS if name in given]
        if unused:
            raise ConfigError(f"--{_option(unused[0])} needs --eval-every N: evaluation is off")
    validate(config)
    if config.channels is None:
        root = Path(config.data_root) if config.data_root else None
        config = replace(config, channels=native_channels(config.dataset, root))
    model_config_of(config)
    return config


def check_fits(model_config: ModelConfig, device: torch.device) -> None:
    """Refuse networks whose weights, gradients and Adam moments alone outgrow the device."""
    needed = model_config.parameter_count() * 4 * 4  # float32 each: weights, grads, 2 moments
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    else:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        shape = f"--nz {model_config.nz} --ngf {model_config.ngf} --ndf {model_config.ndf}"
        raise ResourceError(
            f"the networks of {shape} at --image-size {model_config.image_size} need "
            f"{needed / 2**30:.3g} GiB for weights, gradients and Adam's state; the {device.type} "
            f"has {available / 2**30:.3g} GiB"
        )


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int  # this process's rank (0 without torchrun)
    world_size: int
    autocast_dtype: torch.dtype | None  # None: fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed precision in the run's dtype; nothing at fp32."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def setup_runtime(config: TrainConfig) -> Runtime:
    """Pick the device and precision; join the process group when started by torchrun."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available here")
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    if world_size > 1:
        if config.batch_size % world_size:
            raise ConfigError(
                f"--batch-size {config.batch_size} does not split evenly over {world_size} ranks"
            )
        dist.init_process_group("nccl" if use_cuda else "gloo")
    precision = config.precision
    if precision == "auto":
        native_bf16 = use_cuda or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        precision = "bf16" if native_bf16 else "fp32"
    if precision == "fp16" and not use_cuda:
        raise ConfigError("--precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return Runtime(device, rank, world_size, dtype)


def step_noise(runtime: Runtime, seed: int, step: int, batch: int, nz: int) -> torch.Tensor:
    """The latents of one step: a pure function of (seed, rank, step), so resume needs no RNG."""
    generator = torch.Generator(runtime.device)
    generator.manual_seed((seed * 1_000_003 + step) * 1_009 + runtime.rank)
    return torch.randn(batch, nz, 1, 1, generator=generator, device=runtime.device)


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, kept in checkpoints as plain data."""
    numpy_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])


# ----------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class GAN:
    """The two networks, their optimizers and the grad scaler: what a checkpoint saves."""

    net_g: Generator
    net_d: Discriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    scaler: torch.amp.GradScaler  # loss scaling for fp16; disabled (a no-op) otherwise

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.net_g.state_dict(),
            "discriminator": self.net_d.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net_g.load_state_dict(state["generator"])
        self.net_d.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.scaler.load_state_dict(state["grad_scaler"])

    def samples(self, noise: torch.Tensor, runtime: Runtime) -> torch.Tensor:
        """The generator's images of `noise` on the CPU, with BatchNorm's running statistics."""
        self.net_g.eval()
        with torch.no_grad(), runtime.autocast():
            images: torch.Tensor = self.net_g(noise).float().cpu()
        self.net_g.train()
        return images


def build_gan(
    config: TrainConfig,
    model_config: ModelConfig,
    runtime: Runtime,
    memory_format: torch.memory_format,
) -> GAN:
    """Both networks with the paper's initialisation on the device, and Adam for each."""
    net_g = Generator(model_config)
    net_d = Discriminator(model_config)
    net_g.apply(init_weights)
    net_d.apply(init_weights)
    net_g.to(runtime.device).to(memory_format=memory_format)
    net_d.to(runtime.device).to(memory_format=memory_format)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=config.lr, betas=betas, fused=True)
    opt_d = torch.optim.Adam(net_d.parameters(), lr=config.lr, betas=betas, fused=True)
    scaler = torch.amp.GradScaler(
        runtime.device.type, enabled=runtime.autocast_dtype == torch.float16
    )
    return GAN(net_g, net_d, opt_g, opt_d, scaler)


def wrap_for_training(net: nn.Module, runtime: Runtime, compile: bool) -> nn.Module:
    """The module the loop calls: DDP all-reduces its gradients, torch.compile speeds it up.

    Each network is compiled on its own; compiling the whole step trips pytorch#91542.
    """
    if runtime.world_size > 1:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=device_ids)
    if compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


def without_grad_sync(net: nn.Module) -> AbstractContextManager[Any]:
    """The G step back-propagates through D only to reach G: D's gradients are discarded."""
    return net.no_sync() if isinstance(net, DistributedDataParallel) else nullcontext()


# ----------------------------------------------------------------------------- checkpoints


def check_run_dir(run_dir: Path, resuming_from: Path | None) -> None:
    """Refuse, before anything is written, an --out this run may not or cannot write.

    A new run may not go where a run already is, nor into a directory holding files of other
    kinds, which its config.json or samples could overwrite.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ResourceError(f"cannot write to {run_dir}: it is a file, not a directory")
    if run_dir.is_dir():
        resuming_here = resuming_from is not None and run_dir.resolve() == resuming_from.resolve()
        latest = run_dir / CHECKPOINT_DIR / LATEST
        if (latest.exists() or latest.is_symlink()) and not resuming_here:
            raise ConfigError(
                f"{run_dir} already holds a run; resume it with --resume {run_dir}, "
                "or choose another --out"
            )
        foreign = sorted(
            entry.name
            for entry in run_dir.iterdir()
            if entry.name not in RUN_ENTRIES and not entry.name.startswith(".")  # temporaries
        )
        if (run_dir / "config.json").exists() and not is_run_config(run_dir / "config.json"):
            foreign.insert(0, "config.json")
        if foreign and not resuming_here:
            names = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ConfigError(
                f"{run_dir} holds files that are not a run's ({names}); choose another --out"
            )
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ResourceError(f"cannot write to {run_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ResourceError(f"cannot write to {run_dir}: {existing} is not writable")


def is_run_config(path: Path) -> bool:
    """Whether `path` is the config.json a run writes, not some other program's."""
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and {"train", "model"} <= settings.keys()


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory, checked by check_run_dir, and probe that it takes files."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ResourceError(f"cannot write to {run_dir}: {error.strerror or error}") from None


def save(
    config: TrainConfig,
    gan: GAN,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    best: BestScore | None,
    is_best: bool,
) -> Path:
    """Checkpoint the run at `step`; it resumes at batch `batch_in_epoch` of epoch `epoch`.

    Every checkpoint of a run is built and written here. `best` is the best score so far;
    `is_best`: it was scored at `step`, and best.pt becomes this checkpoint.
    """
    state = {
        "model_config": gan.net_g.config.to_dict(),
        "train_config": asdict(config),
        **gan.state_dict(),
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "rng": rng_states(),
        "best_score": None if best is None else best.to_state(),
    }
    return save_checkpoint(Path(config.out), state, config.keep, best=is_best)


# ----------------------------------------------------------------------------- stopping


class StopSignal:
    """SIGINT/SIGTERM ask the loop to save a checkpoint and stop; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def agreed(self, runtime: Runtime) -> bool:
        """Whether any rank was signalled, agreed across ranks so all stop at the same step."""
        if runtime.world_size == 1:
            return self.received is not None
        flag = torch.tensor([0 if self.received is None else 1], device=runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    checkpoint: Path | None  # None: a resumed run that had nothing left to do, and wrote nothing
    stopped_by: int | None  # the signal that stopped the run early, if any
    score: Score | None = None  # the last score of this run's generator (--eval-every)
    best: BestScore | None = None  # the best score of the run so far


@dataclass(frozen=True)
class Plan:
    """Where the run stops, and which setting says so."""

    total_steps: int
    limit: str  # "--max-steps 30", "--epochs 5 of 8 steps"

    @classmethod
    def of(cls, config: TrainConfig, batches_per_epoch: int) -> Plan:
        by_epochs = config.epochs * batches_per_epoch
        epochs = f"--epochs {config.epochs} of {batches_per_epoch} steps"
        if config.max_steps is None:
            return cls(by_epochs, epochs)
        if config.max_steps <= by_epochs:
            return cls(config.max_steps, f"--max-steps {config.max_steps}")
        return cls(by_epochs, f"{epochs}, before --max-steps {config.max_steps}")

    def describe(self, run_dir: Path, step: int, epoch: int, resumed: bool) -> str:
        if step >= self.total_steps:
            return (
                f"{run_dir} is at step {step}, and {self.limit} ends it at step "
                f"{self.total_steps}: nothing to do (a larger --max-steps or --epochs trains on)"
            )
        if resumed:
            return (
                f"resuming {run_dir} at step {step} (epoch {epoch}): "
                f"training to step {self.total_steps} ({self.limit})"
            )
        return f"training {run_dir} to step {self.total_steps} ({self.limit})"


def train(
    config: TrainConfig, resume: dict[str, Any] | None = None, resume_dir: Path | None = None
) -> TrainResult:
    """Train from scratch, or continue the checkpoint `resume` (loaded from `resume_dir`).

    Everything that can be checked is checked before the run directory is touched: the
    settings, the memory the networks need, --out, the data (decoded when it is preloaded).
    """
    runtime = setup_runtime(config)
    try:
        return _train(config, runtime, resume, resume_dir)
    finally:
        if runtime.world_size > 1:
            dist.destroy_process_group()


def _train(
    config: TrainConfig, runtime: Runtime, resume: dict[str, Any] | None, resume_dir: Path | None
) -> TrainResult:
    # -------- config
    run_dir = Path(config.out)
    model_config = model_config_of(config)
    check_fits(model_config, runtime.device)
    if runtime.is_main:
        check_run_dir(run_dir, resume_dir)
    per_rank = config.batch_size // runtime.world_size  # this rank's share of each batch
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)

    # -------- data
    spec = DataSpec(
        dataset=config.dataset,
        root=Path(config.data_root) if config.data_root else None,
        image_size=config.image_size,
        channels=model_config.channels,
        download=config.download and runtime.is_main,
        workers=config.workers,
        split=config.split,
    )
    batches = Batches(
        spec, config.batch_size, config.seed, runtime.device, config.preload_limit_mb,
        runtime.rank, runtime.world_size,
    )  # fmt: skip
    step, epoch, batch_in_epoch = 0, 0, 0
    if resume is not None:
        step, epoch, batch_in_epoch = resume["step"], resume["epoch"], resume["batch_in_epoch"]
    plan = Plan.of(config, batches.batches_per_epoch)
    if runtime.is_main:
        print(plan.describe(run_dir, step, epoch, resumed=resume is not None), flush=True)
    if step >= plan.total_steps:
        return TrainResult(run_dir, step, epoch, None, None)
    batches.preload()

    # -------- evaluation: rank 0 scores; its real features are read before anything is written
    evaluator = None
    if config.eval_every and runtime.is_main:
        evaluator = open_evaluator(config, model_config.channels)
        print(evaluator.describe(), flush=True)
    best = BestScore.from_state(resume.get("best_score")) if resume is not None else None

    # -------- model and optimizers
    gan = build_gan(config, model_config, runtime, memory_format)
    if resume is not None:
        gan.load_state_dict(resume)
        set_rng_states(resume["rng"])
    run_g = wrap_for_training(gan.net_g, runtime, config.compile)
    run_d = wrap_for_training(gan.net_d, runtime, config.compile)
    criterion = nn.BCEWithLogitsLoss()
    real_label = torch.ones(per_rank, device=runtime.device)
    fake_label = torch.zeros(per_rank, device=runtime.device)
    fixed_noise = torch.randn(
        config.samples, model_config.nz, 1, 1, generator=torch.Generator().manual_seed(config.seed)
    ).to(runtime.device)  # the latents of every sample grid

    # -------- logging: the first writes into the run directory
    if runtime.is_main:
        prepare_run_dir(run_dir)
    settings = {"train": asdict(config), "model": model_config.to_dict()}
    log = RunLog(run_dir, settings, config.batch_size, step, enabled=runtime.is_main)
    if runtime.is_main:
        log.start(batches.first_images(config.samples), resumed=resume is not None)

    # -------- the loop
    total_steps = plan.total_steps
    checkpoint: Path | None = None
    score: Score | None = None
    stop = StopSignal()
    stopped = False
    with stop.installed(), log.progress(total_steps, step) as progress:
        while not stopped and step < total_steps:
            for images in batches.epoch(epoch, batch_in_epoch):
                real = to_model_range(images, memory_format)
                noise = step_noise(runtime, config.seed, step, per_rank, model_config.nz)

                # (1) update D: maximize log D(x) + log(1 - D(G(z)))
                gan.opt_d.zero_grad(set_to_none=True)
                with runtime.autocast():
                    logits_real = run_d(real)
                    loss_d_real = criterion(logits_real.float(), real_label)
                gan.scaler.scale(loss_d_real).backward()
                with runtime.autocast():
                    fake = run_g(noise)
                    logits_fake = run_d(fake.detach())
                    loss_d_fake = criterion(logits_fake.float(), fake_label)
                gan.scaler.scale(loss_d_fake).backward()
                gan.scaler.step(gan.opt_d)

                # (2) update G: maximize log D(G(z)) (the non-saturating loss)
                gan.opt_g.zero_grad(set_to_none=True)
                with without_grad_sync(run_d), runtime.autocast():
                    logits_g = run_d(fake)
                    loss_g = criterion(logits_g.float(), real_label)
                gan.scaler.scale(loss_g).backward()
                gan.scaler.step(gan.opt_g)
                gan.scaler.update()

                step += 1
                batch_in_epoch += 1
                progress.advance()
                loss_d = (loss_d_real + loss_d_fake).detach()
                log.step_losses(step, loss_d, loss_g.detach())  # kept on the device until logged
                if step % config.log_every == 0 or step == total_steps:
                    log.metrics(
                        step, epoch,
                        loss_d=loss_d.item(),
                        loss_g=loss_g.item(),
                        d_x=torch.sigmoid(logits_real.float()).mean().item(),
                        d_g_z1=torch.sigmoid(logits_fake.float()).mean().item(),
                        d_g_z2=torch.sigmoid(logits_g.float()).mean().item(),
                    )  # fmt: skip
                stopped = stop.agreed(runtime) or step >= total_steps
                if stopped:
                    break
                # every save_every steps; the save after the epoch covers its last step
                periodic = config.save_every and step % config.save_every == 0
                if periodic and batch_in_epoch < batches.batches_per_epoch and runtime.is_main:
                    log.flush_losses()
                    checkpoint = save(config, gan, step, epoch, batch_in_epoch, best, False)

            epoch_ended = batch_in_epoch == batches.batches_per_epoch
            if epoch_ended:
                epoch, batch_in_epoch = epoch + 1, 0
                if runtime.is_main:
                    log.epoch_samples(epoch, step, gan.samples(fixed_noise, runtime))
            # -------- evaluation: every eval_every epochs, and at the end of the run
            is_best = False
            if evaluator is not None and (
                (epoch_ended and epoch % evaluator.every == 0) or step >= total_steps
            ):
                score = evaluator.score(gan.net_g, best)
                if score.best:
                    best, is_best = BestScore(evaluator.key, step, score.value), True
                log.score(step, epoch, score)
            # -------- checkpoint: at each epoch end, and where a signal or max_steps stopped
            if runtime.is_main:
                log.flush_losses()
                checkpoint = save(config, gan, step, epoch, batch_in_epoch, best, is_best)

    # -------- the end
    if runtime.is_main:
        log.finish(gan.samples(fixed_noise, runtime))
    return TrainResult(run_dir, step, epoch, checkpoint, stop.received, score, best)
