"""The model repository on disk and the version policy: what exists, and what should be served.

Pure file-system reading and arithmetic, no grpc and no onnxruntime, so that it can be tested
and reasoned about alone. `dcgan.service.models` acts on what it finds.

A repository is DIR/<model>/<version>/, each version an export directory as dcgan-export writes
it. `--model-dir X` is a repository of one model: X's folder name, version 1, X itself.
Hidden entries (a leading dot) are skipped: dcgan-export stages a version in `.<version>.*.tmp`
beside it, and renames it into place only once it is complete and proved.

Each version is read with a signature of its files (names, sizes, modification times), so that a
version that failed to load is tried again only once its files change: a version still being
copied into place by a plain `cp -r` fails its checks (no manifest yet, or a sha256 that does not
match), and is loaded when the copy is complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dcgan.contract.manifest import MAX_VERSION, MODEL_NAME, version_number

_LOGGER = logging.getLogger(__name__)

LATEST = "latest"
ALL = "all"
SPECIFIC = "specific"
NONE = "none"  # model control: what start-up loads is served until the server stops
POLL = "poll"  # the repository is scanned every --poll-s, and the server follows it
EXPLICIT = "explicit"  # loads and unloads happen on request (ModelRepository RPCs)
MODEL_CONTROLS = (NONE, POLL, EXPLICIT)

Signature = tuple[tuple[str, int, int], ...]  # (name, size, mtime in ns) of each entry


class RepositoryError(Exception):
    """The repository cannot be read at all (missing, not a folder, no permission)."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions to serve, by Triton's rules: the newest one (latest), the
    newest N (latest:N), all of them, or those named (specific:1,3)."""

    kind: str = LATEST
    count: int = 1  # latest:N
    versions: frozenset[int] = frozenset()  # specific

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """'latest', 'latest:2', 'all', 'specific:1,3'; ValueError with a line that says why."""
        kind, _, argument = text.strip().partition(":")
        expected = "expected latest, latest:N, all or specific:A,B,..."
        if kind == ALL and not argument:
            return cls(ALL)
        if kind == LATEST:
            if not argument:
                return cls(LATEST)
            count = version_number(argument.strip())
            if count is None:
                raise ValueError(f"{text!r}: N of latest:N must be a positive integer")
            return cls(LATEST, count=count)
        if kind == SPECIFIC:
            parts = [part.strip() for part in argument.split(",")]
            numbers = [version_number(part) for part in parts]
            if not argument or None in numbers:
                raise ValueError(
                    f"{text!r}: specific: takes versions, positive integers separated by commas"
                )
            return cls(SPECIFIC, versions=frozenset(n for n in numbers if n is not None))
        raise ValueError(f"{text!r}: {expected}")

    def select(self, versions: Iterable[int]) -> list[int]:
        """The versions to serve out of `versions`, newest first."""
        ordered = sorted(set(versions), reverse=True)
        if self.kind == LATEST:
            return ordered[: self.count]
        if self.kind == SPECIFIC:
            return [version for version in ordered if version in self.versions]
        return ordered

    def __str__(self) -> str:
        if self.kind == LATEST:
            return LATEST if self.count == 1 else f"{LATEST}:{self.count}"
        if self.kind == SPECIFIC:
            return f"{SPECIFIC}:{','.join(str(v) for v in sorted(self.versions))}"
        return ALL


@dataclass(frozen=True)
class VersionFiles:
    """One version folder as a scan found it."""

    path: Path
    signature: Signature


def signature(path: Path) -> Signature:
    """The names, sizes and modification times of the folder's entries: what a copy changes."""
    entries = []
    try:
        with os.scandir(path) as listing:
            for entry in listing:
                try:
                    stat = entry.stat()
                except OSError:  # gone since the listing, or a dangling link
                    continue
                entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(entries))


def _folders(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as listing:
        return [
            entry
            for entry in listing
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=True)
        ]


class Repository:
    """DIR/<model>/<version>/ on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._reported: set[str] = set()  # entries skipped, each logged once

    def describe(self) -> str:
        return str(self.root)

    def check(self) -> None:
        """Refuse, before a port opens, a repository that cannot be read."""
        if not self.root.exists():
            raise RepositoryError(f"--model-repository {self.root} does not exist")
        if not self.root.is_dir():
            raise RepositoryError(f"--model-repository {self.root} is not a directory")
        try:
            _folders(self.root)
        except OSError as error:
            raise RepositoryError(
                f"cannot read --model-repository {self.root}: {error.strerror}"
            ) from None

    def scan(self) -> dict[str, dict[int, VersionFiles]]:
        """Every model folder and its version folders. Raises RepositoryError when the
        repository itself cannot be read; a model folder that cannot be read has no versions."""
        try:
            models = _folders(self.root)
        except OSError as error:
            raise RepositoryError(f"cannot read {self.root}: {error.strerror}") from None
        found: dict[str, dict[int, VersionFiles]] = {}
        for model in models:
            if not MODEL_NAME.fullmatch(model.name):
                self._skip(model.path, "not a model name (letters, digits, '_', '.', '-')")
                continue
            versions: dict[int, VersionFiles] = {}
            try:
                entries = _folders(Path(model.path))
            except OSError as error:
                self._skip(model.path, f"cannot be read ({error.strerror})")
                entries = []
            for entry in entries:
                version = version_number(entry.name)
                if version is None:
                    self._skip(entry.path, f"not a version (a number from 1 to {MAX_VERSION})")
                    continue
                path = Path(entry.path)
                versions[version] = VersionFiles(path, signature(path))
            found[model.name] = versions
        return found

    def _skip(self, path: str, why: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            _LOGGER.warning("skipping %s: %s", path, why)


class SingleModel:
    """`--model-dir X`: a repository of one model, named after X's folder, version 1."""

    def __init__(self, export_dir: Path) -> None:
        self.export_dir = export_dir
        self.name = Path(os.path.abspath(export_dir)).name or "model"

    def describe(self) -> str:
        return str(self.export_dir)

    def check(self) -> None:
        """Nothing to check here: loading the export says what is wrong with it, in its words."""

    def scan(self) -> dict[str, dict[int, VersionFiles]]:
        return {self.name: {1: VersionFiles(self.export_dir, signature(self.export_dir))}}


Source = Repository | SingleModel
