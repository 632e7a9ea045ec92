"""Command-line fuzzing for the typer apps: every option, given values of every wrong kind.

The options come from the app itself (`typer.main.get_command(app).params`), so an option added
later is fuzzed without anyone listing it. Each case runs in-process (typer's CliRunner) inside
a fresh copy of a small tree of places; the tree is snapshot before and after, so a case that
is refused must leave it exactly as it was, and one that is accepted may only have written its
own output directory.
"""

from __future__ import annotations

import enum
import hashlib
import shutil
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner, Result

HUGE = "1" + "0" * 30


EMPTY_DIR = "empty-dir"
TEXT_FILE = "notes.txt"


@dataclass(frozen=True)
class Places:
    """The tree every case starts from, copied afresh for each case and made its working
    directory: the hostile paths are relative, so they land in the copy."""

    root: Path


def make_places(root: Path) -> Places:
    root.mkdir(parents=True, exist_ok=True)
    (root / EMPTY_DIR).mkdir(exist_ok=True)
    (root / TEXT_FILE).write_text("not what the option wants\n")
    return Places(root)


def copy_places(template: Places, root: Path) -> Places:
    shutil.copytree(template.root, root, symlinks=True)
    return Places(root)


def value_kinds(kind: str) -> dict[str, str]:
    """The hostile values for an option of `kind` ("number", "choice" or "path")."""
    if kind == "path":
        return {
            "empty": "",
            "a directory": EMPTY_DIR,
            "a file": TEXT_FILE,
            "unwritable": f"{TEXT_FILE}/below-a-file",  # nobody, root included, can create it
            "missing": "missing/deeper",
            "relative name": "fuzzed",
            "dash name": "-1",
        }
    wrong = {
        "wrong type": "abc",
        "negative": "-1",
        "empty": "",
        "a directory": EMPTY_DIR,
        "a file": TEXT_FILE,
    }
    if kind == "choice":
        return wrong
    return {**wrong, "zero": "0", "huge": HUGE, "nan": "nan", "infinity": "inf"}


def kind_of(param: Any) -> str:
    annotation = param.type_descriptor.annotation
    inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    base = inner[0] if inner else annotation
    if isinstance(base, type) and issubclass(base, Path):
        return "path"
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return "choice"
    return "number"


@dataclass(frozen=True)
class Param:
    name: str
    flag: str | None  # "--lr"; None for an argument
    kind: str  # "number", "choice", "path", or "switch" for a boolean flag


def params_of(app: typer.Typer, command: str | None = None) -> list[Param]:
    """Every parameter of `app` (or of its subcommand `command`), --help and --version aside."""
    click_command: Any = typer.main.get_command(app)
    if command is not None:
        click_command = click_command.commands[command]
    found = []
    for param in click_command.params:
        if param.param_type_name == "argument":
            found.append(Param(param.name, None, kind_of(param)))
        elif not param.is_eager and not param.hidden:
            kind = "switch" if param.is_flag else kind_of(param)
            found.append(Param(param.name, param.opts[0], kind))
    return found


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under `root` with its kind, and a file's bytes and modification time."""
    state: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            state[key] = ("link", str(path.readlink()))
        elif path.is_dir():
            state[key] = ("dir",)
        else:
            data = path.read_bytes()
            state[key] = ("file", hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns)
    return state


@dataclass(frozen=True)
class Case:
    label: str  # "--lr negative"
    args: list[str]
    out: str | None  # where an accepted case may write, relative to its places


@dataclass(frozen=True)
class Outcome:
    case: Case
    result: Result
    changed: list[str]  # paths created, changed or removed under the case's tree

    @property
    def accepted(self) -> bool:
        return self.result.exit_code == 0


def run_case(
    app: typer.Typer, places: Places, case: Case, chdir: Callable[[Path], None]
) -> Outcome:
    """Run one case in `places` and check what every case must satisfy, accepted or refused."""
    before = snapshot(places.root)
    chdir(places.root)
    result = CliRunner().invoke(app, case.args)
    after = snapshot(places.root)
    changed = sorted(
        key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
    )
    outcome = Outcome(case, result, changed)
    problems = list(contract_problems(outcome, places))
    assert not problems, f"{case.label} ({case.args}): {'; '.join(problems)}"
    return outcome


def contract_problems(outcome: Outcome, places: Places) -> Iterator[str]:
    result, case = outcome.result, outcome.case
    output = result.stdout + result.stderr
    if "Traceback" in output or "error: unexpected" in output:
        yield f"output {output[-600:]!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        yield f"raised {type(result.exception).__name__}: {result.exception}"
    if outcome.accepted:
        out = (places.root / case.out).resolve() if case.out else None
        strays = [
            key
            for key in outcome.changed
            if out is None or not _inside_or_above(places.root / key, out)
        ]
        if strays:
            yield f"accepted, and wrote outside its output: {strays[:5]}"
        return
    if result.exit_code not in (1, 2):
        yield f"exit code {result.exit_code}"
    if outcome.changed:
        yield f"refused, and changed {outcome.changed[:5]}"
    lines = result.stderr.strip().splitlines()
    if lines and lines[0].startswith("error: "):  # ours: one line
        if len(lines) != 1:
            yield f"more than one error line: {lines[:4]!r}"
    elif result.exit_code != 2 or "Error" not in result.stderr:  # click's usage error, boxed
        yield f"neither one error line nor a usage error: {result.stderr[-600:]!r}"


def _inside_or_above(path: Path, out: Path) -> bool:
    """Whether `path` is `out`, lies inside it, or is one of the parents it needed created."""
    path = path.resolve()
    return path.is_relative_to(out) or out.is_relative_to(path)


def option_cases(
    params: list[Param],
    base: dict[str, str],
    positional: list[str],
    prefix: tuple[str, ...] = (),
) -> Iterator[tuple[Param, Case]]:
    """For each parameter, the base command line with that parameter set to each hostile value.

    `base` maps flags to valid values; `positional` holds the valid arguments, in order, and
    `prefix` what comes first (a subcommand, switches that stay on).
    """
    arguments = [param for param in params if param.flag is None]
    for param in params:
        if param.kind == "switch":
            assert param.flag is not None
            args = [*prefix, *_flatten(base), f"{param.flag}=abc", *positional]
            yield param, Case(f"{param.flag}=abc", args, None)
            continue
        for label, value in value_kinds(param.kind).items():
            options = dict(base)
            values = list(positional)
            if param.flag is None:
                values[arguments.index(param)] = value
            else:
                options[param.flag] = value
            out = options.get("--out")
            args = [*prefix, *_flatten(options), *values]
            yield param, Case(f"{param.flag or param.name} {label}", args, out)


def _flatten(options: dict[str, str]) -> list[str]:
    return [part for flag, value in options.items() for part in (flag, value)]
