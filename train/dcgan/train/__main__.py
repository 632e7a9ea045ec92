"""`python -m dcgan.train`, for torchrun: torchrun --nproc-per-node 2 -m dcgan.train ..."""

from dcgan.train.cli import run

run()
