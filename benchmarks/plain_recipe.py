"""The plain DCGAN recipe of pytorch/examples `dcgan/main.py`, as the baseline to measure against.

fp32, NCHW, eager, a DataLoader decoding PNGs with ToTensor + Normalize every step, a Sigmoid at
the end of D and BCELoss: what a user gets from the example script. The networks come from
`dcgan.train.model` (the same layers, index for index), with the example's Sigmoid appended.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets

from dcgan.train.model import Discriminator, Generator, ModelConfig, init_weights


def plain_loader(
    root: Path, image_size: int, channels: int, batch_size: int, workers: int
) -> DataLoader:  # type: ignore[type-arg]
    transform = T.Compose(
        [
            T.Grayscale(channels),
            T.Resize(image_size),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize((0.5,) * channels, (0.5,) * channels),
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )


def run_plain_recipe(
    root: Path,
    config: ModelConfig,
    batch_size: int,
    steps: int,
    warmup: int,
    workers: int = 2,
    seed: int = 1,
) -> tuple[float, list[tuple[float, float]]]:
    """Train `steps` steps; return images/s after `warmup` steps and the (D, G) losses."""
    torch.manual_seed(seed)
    net_g = Generator(config)
    net_d = nn.Sequential(Discriminator(config), nn.Sigmoid())
    net_g.apply(init_weights)
    net_d.apply(init_weights)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses: list[tuple[float, float]] = []
    step, start = 0, 0.0
    while step < steps:
        for real, _ in plain_loader(root, config.image_size, config.channels, batch_size, workers):
            if step == warmup:
                start = time.perf_counter()
            # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
            net_d.zero_grad()
            label = torch.full((batch_size,), 1.0)
            err_d_real = criterion(net_d(real), label)
            err_d_real.backward()
            noise = torch.randn(batch_size, config.nz, 1, 1)
            fake = net_g(noise)
            label.fill_(0.0)
            err_d_fake = criterion(net_d(fake.detach()), label)
            err_d_fake.backward()
            opt_d.step()
            # (2) update G: maximize log(D(G(z)))
            net_g.zero_grad()
            label.fill_(1.0)
            err_g = criterion(net_d(fake), label)
            err_g.backward()
            opt_g.step()
            losses.append(((err_d_real + err_d_fake).item(), err_g.item()))
            step += 1
            if step == steps:
                break
    return (steps - warmup) * batch_size / (time.perf_counter() - start), losses


if __name__ == "__main__":
    import sys

    images_per_s, losses = run_plain_recipe(
        Path(sys.argv[1]), ModelConfig(channels=1), batch_size=128, steps=int(sys.argv[2]), warmup=2
    )
    for step, (loss_d, loss_g) in enumerate(losses, 1):
        if step % 10 == 0:
            print(f"step {step} loss D {loss_d:.3f} G {loss_g:.3f}")
    print(f"{images_per_s:.1f} images/s")
