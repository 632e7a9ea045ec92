"""`python -m dcgan.service`: the same as dcgan-serve."""

from dcgan.service.cli import run

run()
