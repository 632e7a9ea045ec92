"""The command-line fuzz of dcgan-client, dcgan-bench and dcgan-sample.

Every option of a command is found by introspection (`typer.main.get_command(app).params`) and
given values of the wrong type, negative, zero, huge, NaN, infinite, empty, a directory where a
file goes, a file where a directory goes, a missing place and an unwritable one. Each run happens
in a fresh directory of its own (also the working directory); the contract it is held to:
- no traceback and no "error: unexpected" (an exception no check turned into a line);
- exit 0, 1 or 2, and not 0 for a value its option's declaration or the command refuses;
- when it fails, every file in its directory as it was, and nothing left behind.
"""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.testing import CliRunner

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
    if isinstance(kind, type) and issubclass(kind, Enum):
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
        ["cubic", "LINEAR"] if isinstance(kind, type) and issubclass(kind, Enum) else []
    )
    return [(value, value not in good) for value in values]


def cases(surface: Surface) -> Iterator[tuple[str, list[str], bool]]:
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


def make_places(directory: Path) -> dict[str, str]:
    """The places a run may be pointed at, created in `directory`."""
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


def snapshot(directory: Path) -> dict[str, str]:
    """Every path under `directory` and a digest of each file's bytes."""
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
    for index, (label, template, must_fail) in enumerate(cases(surface)):
        directory = root / f"case-{index}"
        places = make_places(directory)
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
