"""Command-line fuzzing of the typer apps: every option, given values of every wrong kind.

The options come from the app itself (`typer.main.get_command(app).params`), so an option added
later is fuzzed without anyone listing it. Each case runs in-process (typer's CliRunner) in a
directory of its own, made its working directory; the directory is snapshot before and after.

Two drivers share that ground:
- `fuzz(Surface, root)` (dcgan-client, dcgan-bench, dcgan-sample) tries values of the wrong type,
  negative, zero, huge, NaN, infinite, empty, a directory where a file goes, a file where a
  directory goes, a missing place and an unwritable one, and holds each run to: no traceback and
  no "error: unexpected"; exit 0, 1 or 2, and not 0 for a value its option's declaration or the
  command refuses; when it fails, its directory exactly as it was.
- `option_cases` and `run_case` (dcgan-train, dcgan-export) hold each case to: refused (exit 1
  or 2, one error line or click's usage error, nothing touched) or accepted (writing only its
  own output directory).
"""

from __future__ import annotations

import enum
import hashlib
import os
import shutil
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.testing import CliRunner, Result


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


# ------------------------------------------------------------------------------ fuzz(Surface)


UNWRITABLE = "/proc/dcgan-fuzz/out.png"  # not even root creates files in /proc
TEXT = "two\nlines\n"  # neither a token nor PEM
WRONG_TYPES = ["abc", "", "1.5.2", "0x1f"]
NUMBERS = ["-1", "0", "1.5", "nan", "inf", "-inf", "1e400", str(2**64), "9" * 40, "-" + "9" * 40]
TEXTS = ["", " ", "a b", "nan", "x" * 300]
PLACES = ["", "{dir}", "{file}", "{empty}", "{binary}", "{missing}", UNWRITABLE, "{long}"]


@dataclass
class Surface:
    """One command to fuzz: its app, the arguments of an otherwise good call, and exceptions.

    `base` maps each option (or argument, by its name) to its good value; the option under test
    takes the place of its own entry. `good` lists the values of an option that are not errors
    (so a run may succeed); `bases` gives some options a call of their own.
    """

    app: typer.Typer
    base: dict[str, list[str]]
    subcommand: str | None = None
    group: dict[str, list[str]] = field(default_factory=dict)  # options before the subcommand
    good: dict[str, set[str]] = field(default_factory=dict)
    bases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    extremes: set[str] = field(default_factory=set)  # options also tried at their declared max
    fuzz_group: bool = False  # fuzz the options before the subcommand too

    def params(self) -> list[tuple[Any, bool]]:
        """(option or argument, whether it goes before the subcommand) for each one to fuzz.

        Flags such as --version take no value and are left out.
        """
        command = typer.main.get_command(self.app)
        found = []
        if self.subcommand is None or self.fuzz_group:
            found += [(param, self.subcommand is not None) for param in command.params]
        if self.subcommand is not None:
            commands: Mapping[str, Any] = command.commands  # type: ignore[attr-defined]
            found += [(param, False) for param in commands[self.subcommand].params]
        return [(param, before) for param, before in found if not getattr(param, "is_flag", False)]


def _name(param: Any) -> str:
    """An option's longest flag (`--count`), or an argument's name."""
    if param.param_type_name == "argument":
        return str(param.name)
    return str(max(param.opts, key=len))


def _kind(param: Any) -> Any:
    """The option's value type: int, float, str, Path or an Enum (lists and optionals unwrapped)."""
    annotation = param.type_descriptor.annotation
    while typing.get_origin(annotation) in (list, tuple, typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def _refused(param: Any, value: str) -> bool:
    """Whether the option's own declaration (type, range, choices) refuses `value`."""
    kind = _kind(param)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return value not in {member.value for member in kind}
    if kind not in (int, float):
        return False
    try:
        number = kind(value)
    except ValueError:
        return True
    low, high = param.min, param.max
    return not ((low is None or number >= low) and (high is None or number <= high))


def _values(surface: Surface, param: Any) -> list[tuple[str, bool]]:
    """(value, must fail) for one option: by its type, then what the surface knows is good."""
    name, kind = _name(param), _kind(param)
    good = surface.good.get(name, set())
    if kind in (int, float):
        values = WRONG_TYPES + NUMBERS
        if name in surface.extremes and param.max is not None:
            values.append(str(param.max))
        return [(value, _refused(param, value) and value not in good) for value in values]
    if kind is Path:
        return [(value, value not in good) for value in PLACES]
    values = TEXTS + (
        ["cubic", "LINEAR"] if isinstance(kind, type) and issubclass(kind, enum.Enum) else []
    )
    return [(value, value not in good) for value in values]


def surface_cases(surface: Surface) -> Iterator[tuple[str, list[str], bool]]:
    """(label, arguments with {placeholders}, must fail) for every option and value."""
    for param, before in surface.params():
        name = _name(param)
        for value, must_fail in _values(surface, param):
            yield f"{name} {value[:40]!r}", _arguments(surface, param, before, value), must_fail


def _arguments(surface: Surface, param: Any, before: bool, value: str) -> list[str]:
    name = _name(param)
    group = dict(surface.group)
    base = dict(surface.bases.get(name, surface.base))
    options = group if before else base
    rest = options.get(name, ["1"] * param.nargs)[1:] if param.nargs > 1 else []
    options[name] = [value, *rest]
    command = [surface.subcommand] if surface.subcommand else []
    return [*_flat(group), *command, *_flat(base)]


def _flat(options: dict[str, list[str]]) -> list[str]:
    """Options as arguments; a key that is not a flag names an argument."""
    arguments: list[str] = []
    for option, values in options.items():
        arguments += [option, *values] if option.startswith("-") else values
    return arguments


def placeholders(directory: Path) -> dict[str, str]:
    """The places a run may be pointed at, created in `directory`: what {dir}, {file} ... name."""
    directory.mkdir(parents=True)
    (directory / "adir").mkdir()
    (directory / "garbage").write_text(TEXT)
    (directory / "empty").write_bytes(b"")
    (directory / "binary.bin").write_bytes(bytes(range(256)))
    return {
        "dir": str(directory / "adir"),
        "file": str(directory / "garbage"),
        "empty": str(directory / "empty"),
        "binary": str(directory / "binary.bin"),
        "missing": str(directory / "missing" / "deeper" / "out.png"),
        "long": str(directory / ("x" * 300 + ".png")),
    }


def contents(directory: Path) -> dict[str, str]:
    """Every path under `directory` and a digest of each file's bytes: equal for equal trees."""
    found = {}
    for path in sorted(directory.rglob("*")):
        found[str(path.relative_to(directory))] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        )
    return found


@contextmanager
def working_directory(directory: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def fuzz(surface: Surface, root: Path) -> set[str]:
    """Run every case of `surface`; raises AssertionError listing each one that broke the contract.

    Returns the options (and arguments) it fuzzed.
    """
    runner = CliRunner(env={name: None for name in os.environ if name.startswith("DCGAN_")})
    broken: list[str] = []
    fuzzed: set[str] = set()
    count = 0
    for index, (label, template, must_fail) in enumerate(surface_cases(surface)):
        directory = root / f"case-{index}"
        places = placeholders(directory)
        arguments = [argument.format(**places) for argument in template]
        before = snapshot(directory)
        with working_directory(directory):
            result = runner.invoke(surface.app, arguments)
        count += 1
        fuzzed.add(label.split(" ")[0])
        output = result.output
        problems = []
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"raised {type(result.exception).__name__}: {result.exception}")
        if "Traceback" in output or "error: unexpected" in output:
            problems.append("printed a traceback")
        if result.exit_code not in (0, 1, 2):
            problems.append(f"exit {result.exit_code}")
        if must_fail and result.exit_code == 0:
            problems.append("exit 0 for a bad value")
        if result.exit_code != 0 and snapshot(directory) != before:
            problems.append("failed, and changed its directory")
        if problems:
            last = output.strip().splitlines()[-1:] or [""]
            broken.append(f"{label}: {'; '.join(problems)} (exit {result.exit_code}: {last[0]})")
    assert not broken, f"{len(broken)} of {count} runs broke the contract:\n" + "\n".join(broken)
    return fuzzed


# ------------------------------------------------------------------ option_cases and run_case


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
