"""The run log's TensorBoard writer on a disk that fails under it."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import torch

from dcgan.train.runlog import RunLog


def test_a_tensorboard_write_that_fails_is_raised_on_the_run_and_prints_no_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)  # not pytest's: prints
    log = RunLog(tmp_path / "run", {}, batch_size=4, step=0, enabled=True)
    log.start(torch.zeros(4, 1, 8, 8), resumed=False)
    log.writer.flush()
    # The event file's directory becomes a file: the writer thread's next write fails for real.
    shutil.rmtree(tmp_path / "run" / "tensorboard")
    (tmp_path / "run" / "tensorboard").write_text("")
    writer_threads = [t for t in threading.enumerate() if "tensorboard" in type(t).__module__]
    assert len(writer_threads) == 1
    log.writer.add_scalar("loss_d", 1.0, 1)
    writer_threads[0].join(timeout=30)  # it ends on its failure
    assert not writer_threads[0].is_alive()
    with pytest.raises(OSError, match="Not a directory"):
        log.writer.add_scalar("loss_d", 1.0, 2)
    assert "Traceback" not in capfd.readouterr().err
