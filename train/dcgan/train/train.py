"""Train the DCGAN: config, data, model, optimizers, loop, checkpoints, top to bottom.

Runs on one CPU or GPU, or under torchrun with DistributedDataParallel (nccl on GPUs, gloo on
CPUs); rank 0 writes checkpoints and logs. Exact resume: the noise of step s is drawn from a
generator seeded by (seed, rank, s) and the data order of epoch e by (seed, e), so a checkpoint's
weights, optimizer states and (epoch, batch) position continue the run bit for bit on CPU.
"""

from __future__ import annotations

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

from dcgan.train.checkpoint import CHECKPOINT_DIR, LATEST, load_checkpoint, save_checkpoint
from dcgan.train.config import IDENTITY_FIELDS, Device, Precision, TrainConfig
from dcgan.train.data import Batches, DataSpec, native_channels, to_model_range
from dcgan.train.model import Discriminator, Generator, ModelConfig, init_weights
from dcgan.train.runlog import RunLog

# ----------------------------------------------------------------------------- config


class ConfigError(Exception):
    """Settings that contradict each other or the run being resumed."""


def model_config_of(config: TrainConfig) -> ModelConfig:
    """The networks' arguments; raises ValueError on a bad size, channel count or width."""
    if config.channels is None:
        raise ConfigError("channels are resolved by resolve_config")
    return ModelConfig(config.nz, config.ngf, config.ndf, config.channels, config.image_size)


def check_choice(option: str, value: str, choices: type[StrEnum]) -> None:
    names = [choice.value for choice in choices]
    if value not in names:
        raise ConfigError(f"--{option} must be {', '.join(names[:-1])} or {names[-1]}, not {value}")


def validate(config: TrainConfig) -> None:
    model_config_of(config)
    for name in ("batch_size", "epochs", "keep", "log_every", "samples"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if config.max_steps is not None and config.max_steps < 1:
        raise ConfigError("--max-steps must be at least 1")
    check_choice("device", config.device, Device)
    check_choice("precision", config.precision, Precision)


def resolve_config(given: dict[str, Any], resumed: dict[str, Any] | None = None) -> TrainConfig:
    """The run's settings: defaults, then a resumed run's own, then those given explicitly.

    On resume, an identity setting given with a different value is an error, not a silent change.
    """
    known = {field.name for field in fields(TrainConfig)}
    base = TrainConfig()
    if resumed is not None:
        base = replace(base, **{key: value for key, value in resumed.items() if key in known})
        for key in IDENTITY_FIELDS:
            if key in given and given[key] != getattr(base, key):
                raise ConfigError(
                    f"the run being resumed has {key}={getattr(base, key)!r}; "
                    f"drop --{key.replace('_', '-')} or start a new run"
                )
    config = replace(base, **given)
    if config.channels is None:
        root = Path(config.data_root) if config.data_root else None
        config = replace(config, channels=native_channels(config.dataset, root))
    validate(config)
    return config


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


def prepare_run_dir(run_dir: Path, resuming_from: Path | None) -> None:
    """Create and probe the run directory; refuse to write a new run over an existing one."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to {run_dir}: {error.strerror or error}") from None
    latest = run_dir / CHECKPOINT_DIR / LATEST
    if latest.exists() and (resuming_from is None or run_dir.resolve() != resuming_from.resolve()):
        raise ConfigError(
            f"{run_dir} already holds a run; resume it with --resume {run_dir}, "
            "or choose another --out"
        )


def save(config: TrainConfig, gan: GAN, step: int, epoch: int, batch_in_epoch: int) -> Path:
    """Checkpoint the run at `step`; it resumes at batch `batch_in_epoch` of epoch `epoch`.

    Every checkpoint of a run is built and written here.
    """
    state = {
        "model_config": gan.net_g.config.to_dict(),
        "train_config": asdict(config),
        **gan.state_dict(),
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "rng": rng_states(),
    }
    return save_checkpoint(Path(config.out), state, config.keep)


def load_resume(path: Path) -> tuple[dict[str, Any], Path]:
    """A verified checkpoint to resume and its run directory."""
    state = load_checkpoint(path)
    checkpoint_dir = (path if path.is_dir() else path.parent).resolve()
    run_dir = checkpoint_dir.parent if checkpoint_dir.name == CHECKPOINT_DIR else checkpoint_dir
    return state, run_dir


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
    checkpoint: Path | None
    stopped_by: int | None  # the signal that stopped the run early, if any


def train(
    config: TrainConfig, resume: dict[str, Any] | None = None, resume_dir: Path | None = None
) -> TrainResult:
    """Train from scratch, or continue the checkpoint `resume` (loaded from `resume_dir`)."""
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
    if runtime.is_main:
        prepare_run_dir(run_dir, resume_dir)
    model_config = model_config_of(config)
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
    )
    batches = Batches(
        spec, config.batch_size, config.seed, runtime.device, config.preload_limit_mb,
        runtime.rank, runtime.world_size,
    )  # fmt: skip

    # -------- model and optimizers
    gan = build_gan(config, model_config, runtime, memory_format)
    step, epoch, batch_in_epoch = 0, 0, 0
    if resume is not None:
        gan.load_state_dict(resume)
        set_rng_states(resume["rng"])
        step, epoch, batch_in_epoch = resume["step"], resume["epoch"], resume["batch_in_epoch"]
    run_g = wrap_for_training(gan.net_g, runtime, config.compile)
    run_d = wrap_for_training(gan.net_d, runtime, config.compile)
    criterion = nn.BCEWithLogitsLoss()
    real_label = torch.ones(per_rank, device=runtime.device)
    fake_label = torch.zeros(per_rank, device=runtime.device)
    fixed_noise = torch.randn(
        config.samples, model_config.nz, 1, 1, generator=torch.Generator().manual_seed(config.seed)
    ).to(runtime.device)  # the latents of every sample grid

    # -------- logging
    settings = {"train": asdict(config), "model": model_config.to_dict()}
    log = RunLog(run_dir, settings, config.batch_size, step, enabled=runtime.is_main)
    if runtime.is_main:
        log.start(batches.first_images(config.samples), resumed=resume is not None)

    # -------- the loop
    total_steps = config.epochs * batches.batches_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    checkpoint: Path | None = None
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
                if step % config.log_every == 0 or step == total_steps:
                    log.metrics(
                        step, epoch,
                        loss_d=(loss_d_real + loss_d_fake).item(),
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
                    checkpoint = save(config, gan, step, epoch, batch_in_epoch)

            if batch_in_epoch == batches.batches_per_epoch:  # the epoch ran to its end
                epoch, batch_in_epoch = epoch + 1, 0
                if runtime.is_main:
                    log.epoch_samples(epoch, step, gan.samples(fixed_noise, runtime))
            # -------- checkpoint: at each epoch end, and where a signal or max_steps stopped
            if runtime.is_main:
                checkpoint = save(config, gan, step, epoch, batch_in_epoch)

    # -------- the end
    if runtime.is_main:
        log.finish(gan.samples(fixed_noise, runtime))
    return TrainResult(run_dir, step, epoch, checkpoint, stop.received)
