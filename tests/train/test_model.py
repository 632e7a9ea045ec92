"""The networks: shapes at every size, the paper's init, and pytorch/examples compatibility."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dcgan.train.model import Discriminator, Generator, ModelConfig, init_weights
from tests.support.models import pytorch_examples_netd, pytorch_examples_netg


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_size(image_size: int, channels: int) -> None:
    config = ModelConfig(nz=16, ngf=8, ndf=8, channels=channels, image_size=image_size)
    net_g, net_d = Generator(config), Discriminator(config)
    z = torch.randn(3, 16)
    image = net_g(z)
    assert image.shape == (3, channels, image_size, image_size)
    assert torch.equal(net_g(z.view(3, 16, 1, 1)), image)
    assert image.abs().max() <= 1.0
    assert net_d(image).shape == (3,)


def test_layer_widths_follow_the_paper_pyramid() -> None:
    net_g = Generator(ModelConfig(image_size=64))
    widths = [m.out_channels for m in net_g.main if isinstance(m, nn.ConvTranspose2d)]
    assert widths == [512, 256, 128, 64, 3]
    net_g128 = Generator(ModelConfig(image_size=128))
    assert next(m for m in net_g128.main if isinstance(m, nn.ConvTranspose2d)).out_channels == 1024
    assert all(m.bias is None for m in net_g.modules() if isinstance(m, nn.ConvTranspose2d))
    net_d = Discriminator(ModelConfig(image_size=32))
    assert [m.out_channels for m in net_d.main if isinstance(m, nn.Conv2d)] == [64, 128, 256, 1]


def test_pytorch_examples_generator_state_dict_loads_unchanged(tmp_path: Path) -> None:
    reference = pytorch_examples_netg().eval()
    path = tmp_path / "netG_epoch_24.pth"
    torch.save(reference.state_dict(), path)  # what the example script writes
    ours = Generator(ModelConfig())
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    ours.eval()
    z = torch.randn(4, 100, 1, 1)
    assert torch.equal(ours(z), reference(z))


def test_pytorch_examples_discriminator_is_ours_plus_a_sigmoid() -> None:
    reference = pytorch_examples_netd().eval()
    ours = Discriminator(ModelConfig())
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(torch.sigmoid(ours(x)), reference(x))


def test_init_weights_follows_the_paper() -> None:
    torch.manual_seed(0)
    net_g = Generator(ModelConfig())
    net_g.apply(init_weights)
    conv = net_g.main[3].weight
    assert abs(conv.mean().item()) < 1e-3
    assert conv.std().item() == pytest.approx(0.02, rel=0.05)
    bn = net_g.main[1]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.count_nonzero(bn.bias) == 0


def test_logits_with_bce_with_logits_work_under_autocast() -> None:
    net_d = Discriminator(ModelConfig(ndf=8, image_size=32))
    x = torch.rand(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.BCEWithLogitsLoss()(net_d(x).float(), torch.ones(4))
    loss.backward()
    assert torch.isfinite(loss)
    assert net_d.main[0].weight.grad is not None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_size", 48, "image size must be one of 32, 64, 128"),
        ("channels", 2, "channels must be 1 or 3"),
        ("nz", 0, "nz must be at least 1"),
    ],
)
def test_config_rejects_bad_values(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{field: value})


@pytest.mark.parametrize(
    "config",
    [ModelConfig(), ModelConfig(16, 8, 8, 1, 32), ModelConfig(7, 3, 5, 3, 128)],
    ids=["default", "tiny 32", "odd widths 128"],
)
def test_parameter_count_matches_the_built_networks(config: ModelConfig) -> None:
    built = sum(
        parameter.numel()
        for network in (Generator(config), Discriminator(config))
        for parameter in network.parameters()
    )
    assert config.parameter_count() == built
    # counted, not built: a width no machine holds is still just a number
    assert (
        ModelConfig(nz=10**12, ngf=8, ndf=8, channels=1, image_size=32).parameter_count() > 10**14
    )
