"""Quality measured while training: one metric of the generator every few epochs (--eval-every).

The metric comes from dcgan-eval (`dcgan.eval.quality`), which itself depends on dcgan-train:
it is imported here only when a run asks for evaluation, and `dcgan-train[eval]` installs it.
Every score compares the same seeded latents' images against the run's own training data (its
features cached by dcgan-eval), so successive scores differ only by the generator's weights.
Scoring leaves the run exactly as it was: the generator goes back to train mode with BatchNorm's
running statistics untouched, and the global random generators (which building a feature network
draws from) are restored, so a run with evaluation trains bit for bit as one without.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dcgan.train.checkpoint import BEST, CHECKPOINT_DIR
from dcgan.train.config import (
    LOWER_IS_BETTER,
    ConfigError,
    EvalFeatures,
    EvalMetric,
    TrainConfig,
    eval_features_of,
)
from dcgan.train.model import Generator

if TYPE_CHECKING:
    from dcgan.eval.reference import Reference

EVAL_SEED = 0  # the latents of every score: dcgan-eval's default seed, so it reproduces the number
MIN_EVAL_SAMPLES = 10  # dcgan-eval's minimum on either side of a comparison
MAX_EVAL_SAMPLES = 50_000  # the FID-50k of the literature
INSTALL_HINT = "pip install 'dcgan-train[eval]' (in this workspace: uv sync)"
CLASSIFIER_HINT = "dcgan-eval train-classifier --dataset ... --data-root ... --out FILE makes one"


class EvaluationError(Exception):
    """What scoring cannot use: dcgan-eval not installed, a feature network or data it refuses."""


@contextmanager
def untouched_rngs() -> Iterator[None]:
    """Python's, NumPy's and torch's global random generators as they were before the block."""
    python, numpy_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(cpu)
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


@dataclass(frozen=True)
class BestScore:
    """The best score of a run so far, kept in its checkpoints so that a resumed run goes on."""

    key: str  # what was measured (Evaluator.key): only a score of the same key compares
    step: int
    value: float

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Any) -> BestScore | None:
        """The best score a checkpoint holds; None when it holds none."""
        if not isinstance(state, dict):
            return None
        return cls(str(state["key"]), int(state["step"]), float(state["value"]))


@dataclass(frozen=True)
class Score:
    metric: str
    value: float
    features: str  # the feature network's id (kind and weights' sha256)
    samples: int
    seconds: float
    best: bool  # the best of the run so far: best.pt is its checkpoint

    def describe(self, step: int, best: BestScore | None, run_dir: Path) -> str:
        """One line for the end of a run: this score, and the best one."""
        text = f"{self.metric} {self.value:.4g} at step {step} ({self.samples} generated images)"
        if best is not None:
            best_file = run_dir / CHECKPOINT_DIR / BEST
            text += f"; best {best.value:.4g} at step {best.step}: {best_file}"
        return text

    def row(self) -> dict[str, Any]:
        """The fields of its line in metrics.jsonl."""
        return {
            "eval_metric": self.metric,
            "eval_value": self.value,
            "eval_features": self.features,
            "eval_samples": self.samples,
            "eval_best": self.best,
            "eval_seconds": self.seconds,
        }


def validate_evaluation(config: TrainConfig) -> None:
    """The evaluation settings on their own and together; nothing is read. ConfigError names the
    option."""
    if config.eval_every < 0:
        raise ConfigError(f"--eval-every must be at least 0, not {config.eval_every}")
    if config.eval_every == 0:
        return
    if not MIN_EVAL_SAMPLES <= config.eval_samples <= MAX_EVAL_SAMPLES:
        raise ConfigError(
            f"--eval-samples must be between {MIN_EVAL_SAMPLES} and {MAX_EVAL_SAMPLES}, "
            f"not {config.eval_samples}"
        )
    for option, value in (
        ("eval-classifier", config.eval_classifier),
        ("inception-weights", config.inception_weights),
    ):
        if value is not None and not str(value).strip():
            raise ConfigError(f"--{option} is empty")
    if config.dataset == "fake":
        raise ConfigError("--eval-every: --dataset fake is noise, with no real images to score")
    if config.split != "train":
        # dcgan.eval.quality's digits_reference and inception_reference read the train split
        raise ConfigError("--eval-every scores against the train split; drop --split test")
    features = eval_features_of(config)
    if features == EvalFeatures.digits and config.eval_classifier is None:
        raise ConfigError(f"--eval-features digits needs --eval-classifier FILE; {CLASSIFIER_HINT}")
    if features == EvalFeatures.inception and config.eval_classifier is not None:
        raise ConfigError("--eval-classifier is for --eval-features digits, not inception")
    if features == EvalFeatures.digits and config.inception_weights is not None:
        raise ConfigError("--inception-weights is for --eval-features inception, not digits")
    needs = {
        EvalMetric.classifier_score: EvalFeatures.digits,
        EvalMetric.inception_score: EvalFeatures.inception,
    }.get(EvalMetric(config.eval_metric))
    if needs is not None and features != needs:
        raise ConfigError(
            f"--eval-metric {config.eval_metric} needs --eval-features {needs.value}, "
            f"not {features}"
        )


class Evaluator:
    """Scores a generator against the run's training data in one feature network."""

    def __init__(self, config: TrainConfig, reference: Reference) -> None:
        self.metric = config.eval_metric
        self.samples = config.eval_samples
        self.every = config.eval_every
        self.reference = reference

    @property
    def key(self) -> str:
        """What a score measures; scores of different keys do not compare."""
        return f"{self.metric} in {self.reference.network.info.id}, {self.samples} samples"

    def describe(self) -> str:
        cached = "cached" if self.reference.cache_hit else "computed"
        return (
            f"scoring {self.metric} every {self.every} epoch{'s' * (self.every > 1)} and at the "
            f"end: {self.samples} generated images against {self.reference.count} real ones "
            f"({cached} in {self.reference.seconds:.1f} s), in "
            f"{self.reference.network.info.description}"
        )

    def score(self, generator: Generator, best: BestScore | None) -> Score:
        """The generator's score, and whether it beats `best` (or starts a best of its own)."""
        from dcgan.eval.quality import score_generator

        start = time.perf_counter()
        with untouched_rngs():
            value = score_generator(
                generator, self.reference, self.metric, self.samples, seed=EVAL_SEED
            )
        info = self.reference.network.info
        return Score(
            self.metric, value, info.id, self.samples, time.perf_counter() - start,
            self.improves(value, best),
        )  # fmt: skip

    def improves(self, value: float, best: BestScore | None) -> bool:
        if not math.isfinite(value):
            return False
        if best is None or best.key != self.key:
            return True
        return value < best.value if self.metric in LOWER_IS_BETTER else value > best.value


def open_evaluator(config: TrainConfig, channels: int) -> Evaluator:
    """The run's evaluator: its feature network loaded and the real features read or computed.

    Every way this fails is found here, before the run writes anything.
    """
    try:
        from dcgan.eval.errors import EvalError, OptionError
        from dcgan.eval.quality import digits_reference, inception_reference
    except ImportError as error:
        raise EvaluationError(
            f"--eval-every needs dcgan-eval, which is not installed ({error}): {INSTALL_HINT}"
        ) from None
    root = Path(config.data_root) if config.data_root else None
    try:
        with untouched_rngs():  # building a network draws its initial weights
            if eval_features_of(config) == EvalFeatures.digits:
                assert config.eval_classifier is not None  # validate_evaluation saw to it
                reference = digits_reference(
                    config.dataset, root, Path(config.eval_classifier), config.image_size, channels
                )
            else:
                weights = Path(config.inception_weights) if config.inception_weights else None
                reference = inception_reference(
                    config.dataset, root, config.image_size, channels, weights=weights
                )
    except OptionError as error:
        raise ConfigError(str(error)) from None
    except EvalError as error:
        raise EvaluationError(str(error)) from None
    if reference.count < MIN_EVAL_SAMPLES:
        raise EvaluationError(
            f"the training data holds {reference.count} images; --eval-every compares at least "
            f"{MIN_EVAL_SAMPLES}"
        )
    metric = config.eval_metric
    score_name = reference.network.score_name
    if metric in (EvalMetric.inception_score, EvalMetric.classifier_score) and score_name != metric:
        raise ConfigError(
            f"--eval-metric {metric} needs class logits, and "
            f"{reference.network.info.description} gives none"
        )
    return Evaluator(config, reference)
