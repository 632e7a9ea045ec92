"""Faults in training and in model files: kills, full and read-only disks, damaged exports."""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dcgan.train.checkpoint import load_checkpoint
from tests.support.exports import make_export
from tests.support.training import assert_same_training_state, cli_args

TOTAL_STEPS = 30
KEEP = 2  # step files kept by --keep


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


def train_process(data: Path, run: Path, *extra: str, **kwargs: Any) -> subprocess.Popen[str]:
    args = cli_args(
        data, run, "--save-every=1", f"--keep={KEEP}", f"--max-steps={TOTAL_STEPS}", *extra
    )
    if (run / "checkpoints" / "latest.pt").exists():
        args = [
            "--resume",
            str(run),
            f"--max-steps={TOTAL_STEPS}",
            "--save-every=1",
            f"--keep={KEEP}",
            *extra,
        ]
    return subprocess.Popen(
        [sys.executable, "-m", "dcgan.train", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def kill_while_writing(
    run: Path, process: subprocess.Popen[str], skip: int, limit_s: float = 120
) -> bool:
    """SIGKILL inside a checkpoint write (after letting `skip` writes finish); False if none came."""
    checkpoints = run / "checkpoints"
    seen: set[str] = set()
    deadline = time.monotonic() + limit_s
    while process.poll() is None and time.monotonic() < deadline:
        writing = (
            {n for n in os.listdir(checkpoints) if n.endswith(".tmp")}
            if checkpoints.is_dir()
            else set()
        )
        if writing - seen and len(seen) >= skip:
            process.kill()
            process.wait()
            return True
        seen |= writing
    return False


def kill_while_training(
    run: Path, process: subprocess.Popen[str], delay_s: float, limit_s: float = 120
) -> None:
    """SIGKILL `delay_s` after the run logs a new step: in a step, a save or between them."""
    metrics = run / "metrics.jsonl"
    lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    deadline = time.monotonic() + limit_s
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) > lines:
            break
        time.sleep(0.01)
    time.sleep(delay_s)
    process.kill()
    process.wait()


def step_numbers(run: Path) -> list[int]:
    """The steps of the run's step files, oldest first."""
    checkpoints = run / "checkpoints"
    names = os.listdir(checkpoints) if checkpoints.is_dir() else []
    return sorted(int(name[5:-3]) for name in names if name.startswith("step-"))


def test_sigkill_at_random_moments_never_loses_a_checkpoint(
    mnist_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each save writes its step file, then prunes to the newest KEEP: a kill between the two
    leaves one more, and a resumed run's first complete save prunes it."""
    reference = tmp_path / "reference"
    straight = train_process(mnist_subset, reference)
    assert straight.wait(300) == 0, straight.communicate()[1]

    run = tmp_path / "killed"
    rng = random.Random(7)
    steps_seen = []
    mid_write = 0
    most = KEEP  # the step files a round may leave: KEEP, plus one for each unpruned save
    for round_ in range(6):
        resumed_from = (
            load_checkpoint(run)["step"] if (run / "checkpoints" / "latest.pt").exists() else 0
        )
        process = train_process(mnist_subset, run, "--log-every=1")
        if round_ % 2:  # every other kill lands inside a checkpoint write
            mid_write += kill_while_writing(run, process, skip=rng.randrange(1, 4))
        else:  # the others at a random moment of training: in a step, a save, or between
            kill_while_training(run, process, rng.uniform(0.0, 0.5))
        if (run / "checkpoints" / "latest.pt").exists():
            state = load_checkpoint(run)  # latest always loads: verified, complete
            steps_seen.append(state["step"])
        steps = step_numbers(run)
        # two saves of this round: the first of them pruned to KEEP before the second was written
        most = KEEP + 1 if len([step for step in steps if step > resumed_from]) >= 2 else most + 1
        assert len(steps) <= most, (round_, resumed_from, steps)
    assert mid_write >= 2
    assert len(steps_seen) >= 3 and steps_seen == sorted(steps_seen)
    final = train_process(mnist_subset, run)
    assert final.wait(300) == 0, final.communicate()[1]
    finished = load_checkpoint(run)
    assert finished["step"] == TOTAL_STEPS
    assert step_numbers(run) == list(range(TOTAL_STEPS - KEEP + 1, TOTAL_STEPS + 1))  # pruned back
    assert_same_training_state(load_checkpoint(reference), finished)
    report(
        capsys,
        f"training kills: 6 SIGKILLs ({mid_write} inside a checkpoint write), latest loaded after each "
        f"(steps {steps_seen}); resumed to step {TOTAL_STEPS}, bitwise equal to an uninterrupted run, "
        f"{KEEP} step files kept",
    )


def test_a_full_disk_during_training_keeps_the_previous_checkpoint(
    mnist_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RLIMIT_FSIZE makes every write past the limit fail as a full disk does (EFBIG)."""
    run = tmp_path / "run"
    first = subprocess.run(
        [sys.executable, "-m", "dcgan.train", *cli_args(mnist_subset, run, "--max-steps=2")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = (run / "checkpoints" / "step-00000002.pt").read_bytes()
    limit = len(before) // 2

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "dcgan.train", "--resume", str(run), "--max-steps=4"],
        capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("error: File too large") and "Traceback" not in message
    assert len(message.splitlines()) == 1
    assert (run / "checkpoints" / "step-00000002.pt").read_bytes() == before
    assert load_checkpoint(run)["step"] == 2
    assert not [name for name in os.listdir(run / "checkpoints") if name.endswith(".tmp")]
    report(
        capsys,
        f"full disk (RLIMIT_FSIZE): '{message}', exit 1; step-2 checkpoint intact, no temp files",
    )


ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private mount",
)


@ROOT_ONLY
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_real_full_and_read_only_filesystems_during_training(
    mnist_subset: Path, tmp_path: Path, fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a private mount namespace: a tiny tmpfs fills up, or is remounted read-only, mid-run."""
    mount = tmp_path / "disk"
    mount.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    args = " ".join(
        cli_args(mnist_subset, mount / "run", "--epochs=1000", "--save-every=1", "--keep=5")
    )
    size = "600k" if fault == "full" else "64m"  # a checkpoint of TINY takes about 170 kB
    # a remount is refused (EBUSY) while the run holds a file open for writing: try again, up to
    # 20 s, and stop the run if it never takes, so that the test fails instead of waiting
    remount = f"mount -o remount,ro {mount} 2>/dev/null && break"
    break_disk = (
        "true"
        if fault == "full"
        else f"for _ in $(seq 400); do {remount}; sleep 0.05; done; "
        f"grep -q ' {mount} .*ro,' /proc/mounts || kill $pid"
    )
    script = f"""
set -u
mount -t tmpfs -o size={size} tmpfs {mount}
{sys.executable} -m dcgan.train {args} 2> {out}/stderr &
pid=$!
while [ ! -e {mount}/run/checkpoints/latest.pt ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
sleep 1
{break_disk}
wait $pid
echo $? > {out}/code
{sys.executable} -c "from pathlib import Path; from dcgan.train.checkpoint import load_checkpoint; print(load_checkpoint(Path('{mount}/run'))['step'])" > {out}/step 2>&1
"""
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        timeout=600,
        check=True,
    )
    code = int((out / "code").read_text())
    stderr = (out / "stderr").read_text().strip()
    step = (out / "step").read_text().strip()
    assert code == 1, stderr
    expected = "No space left on device" if fault == "full" else "Read-only file system"
    assert stderr.splitlines()[-1].startswith(f"error: {expected}"), stderr
    assert "Traceback" not in stderr
    assert step.isdigit() and int(step) >= 1, step  # the last checkpoint loads
    report(
        capsys,
        f"{fault} filesystem mid-run: '{stderr.splitlines()[-1]}', exit 1; latest (step {step}) loads",
    )


# ------------------------------------------------------------------------------ model files


def serve_once(model_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcgan.service.cli", "--model-dir", str(model_dir), "--host", "127.0.0.1",
         "--port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "swapped", "missing", "no manifest"])
def test_a_damaged_export_is_refused_at_start(
    export_dir: Path, tmp_path: Path, damage: str
) -> None:
    broken = tmp_path / "export"
    shutil.copytree(export_dir, broken)
    model = broken / "generator_serving.onnx"
    data = model.read_bytes()
    if damage == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif damage == "corrupted":
        model.write_bytes(data[:1000] + bytes([data[1000] ^ 0x40]) + data[1001:])
    elif damage == "swapped":
        other = make_export(tmp_path / "other", seed=1)
        shutil.copy(other / "generator_serving.onnx", model)
    elif damage == "missing":
        model.unlink()
    else:
        (broken / "manifest.json").unlink()
    result = serve_once(broken)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot serve {broken}")
    expected = {
        "truncated": "does not match its manifest: sha256",
        "corrupted": "does not match its manifest: sha256",
        "swapped": "does not match its manifest: sha256",
        "missing": "generator_serving.onnx is missing",
        "no manifest": "no manifest.json",
    }[damage]
    assert expected in line and "Traceback" not in result.stderr
