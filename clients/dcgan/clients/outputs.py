"""Where the commands write their pictures, by the extension of --out: one rule for
`dcgan-client generate`, `dcgan-client interpolate` and `dcgan-sample`.

  .png .jpg .jpeg .webp .bmp          one grid of the images
  .gif                                an animation, one frame per image
  no suffix, or an existing directory one PNG per image in that directory
  any other suffix                    a usage error that states this rule

A destination is checked before any work: the directory it goes in must exist (for a new output
directory, its nearest existing parent) and take a file, which a probe file created and removed
there proves. Files are written whole (a temporary name beside the target, renamed over it) and a
new output directory appears complete or not at all, so a failure leaves what was there before.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
ANIMATION_FORMATS = {".gif": "GIF"}
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383, "GIF": 65535}  # pixels a side each format holds
RULE = (
    "by extension: .png .jpg .jpeg .webp .bmp write one grid, .gif an animation, and a path "
    "with no suffix (or an existing directory) one PNG per image"
)
OUT_HELP = f"Where to write, {RULE}."
GAP = 2  # pixels around each image of a grid
FRAME_MS = 120  # how long an animation shows each image


class Layout(StrEnum):
    GRID = "grid"
    ANIMATION = "animation"
    FOLDER = "folder"


class UnsupportedOutput(ValueError):
    """An --out this module does not write (a usage error, exit 2)."""


class UnwritableOutput(Exception):
    """An --out that cannot be written here (exit 1)."""


@dataclass(frozen=True)
class Destination:
    path: Path
    layout: Layout
    format: str  # PIL's name of the file format
    option: str = "--out"

    def check_grid(self, count: int, size: int, columns: int) -> None:
        """Refuse a grid larger than its format holds, before the images are made."""
        limit = MAX_SIDE.get(self.format)
        if self.layout is not Layout.GRID or limit is None:
            return
        width, height = grid_size(count, size, columns)
        if max(width, height) > limit:
            raise UnsupportedOutput(
                f"{self.option} {self.path}: a grid of {count} images of {size}x{size} is "
                f"{width}x{height} pixels, and {self.format} holds at most {limit} a side: "
                "write .png, or a directory"
            )


def destination(path: Path, option: str = "--out") -> Destination:
    """What `path` asks for, after checking that it can be written; raises before any work."""
    try:
        if path.is_dir():
            _check_folder(path, option)
            return Destination(path, Layout.FOLDER, "PNG", option)
        suffix = path.suffix.lower()
        if not suffix:
            _check_folder(path, option)
            return Destination(path, Layout.FOLDER, "PNG", option)
        if suffix in GRID_FORMATS:
            layout, file_format = Layout.GRID, GRID_FORMATS[suffix]
        elif suffix in ANIMATION_FORMATS:
            layout, file_format = Layout.ANIMATION, ANIMATION_FORMATS[suffix]
        else:
            raise UnsupportedOutput(f"{option} {path}: {suffix} is not a picture format; {RULE}")
        check_file(path, option)
    except OSError as error:  # a name too long, a component that is a file...
        raise UnwritableOutput(f"{option} {path}: {error.strerror or error}") from None
    return Destination(path, layout, file_format, option)


def check_file(path: Path, option: str) -> None:
    """Check that a file can be written at `path` (replacing a file that is there)."""
    try:
        if path.is_dir():
            raise UnwritableOutput(f"{option} {path} is a directory")
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise UnwritableOutput(f"{option} {path} exists and is not a regular file")
            if not os.access(path, os.W_OK):
                raise UnwritableOutput(f"{option} {path} is read-only")
        _check_directory(path.parent, option, path)
    except OSError as error:
        raise UnwritableOutput(f"{option} {path}: {error.strerror or error}") from None


def _check_folder(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise UnwritableOutput(f"{option} {path} exists and is not a directory")
    existing = next(directory for directory in (path, *path.parents) if directory.exists())
    _check_directory(existing, option, path)


def _check_directory(directory: Path, option: str, path: Path) -> None:
    if not directory.exists():
        raise UnwritableOutput(f"{option} {path}: the directory {directory} does not exist")
    if not directory.is_dir():
        raise UnwritableOutput(f"{option} {path}: {directory} is not a directory")
    try:  # a real file, not os.access: root passes access checks on read-only file systems
        handle, probe = tempfile.mkstemp(prefix=".dcgan-probe-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UnwritableOutput(
            f"{option} {path}: cannot write in {directory}: {error.strerror}"
        ) from None


def grid_size(count: int, size: int, columns: int) -> tuple[int, int]:
    """Width and height of a grid of `count` square images, at most `columns` a row."""
    across = max(1, min(columns, count))
    rows = -(-count // across)
    return across * (size + GAP) + GAP, rows * (size + GAP) + GAP


def grid(images: Sequence[Any], columns: int) -> Any:
    """The images in rows of at most `columns` (no more than there are images), 2 px apart."""
    from PIL import Image

    size = images[0].size[0]
    across = max(1, min(columns, len(images)))
    picture = Image.new(images[0].mode, grid_size(len(images), size, columns))
    for index, image in enumerate(images):
        row, column = divmod(index, across)
        picture.paste(image, (GAP + column * (size + GAP), GAP + row * (size + GAP)))
    return picture


def write_pictures(
    target: Destination,
    images: Sequence[Any],
    *,
    columns: int,
    prefix: str,
    there_and_back: bool = False,
) -> None:
    """Write PIL `images` as `target` asks: a grid, an animation, or `prefix-NNNNN.png` files.

    `there_and_back`: an animation plays forward, then back (a latent walk).
    """
    if target.layout is Layout.GRID:
        write_file(target.path, _encoded(grid(images, columns), target.format))
    elif target.layout is Layout.ANIMATION:
        frames = [*images, *images[-2:0:-1]] if there_and_back else list(images)
        write_file(
            target.path,
            _encoded(
                frames[0],
                target.format,
                save_all=True,
                append_images=frames[1:],
                duration=FRAME_MS,
                loop=0,
            ),
        )
    else:
        _write_folder(target.path, [(f"{prefix}-{i:05d}.png", im) for i, im in enumerate(images)])


def _encoded(image: Any, file_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def _write_folder(path: Path, images: list[tuple[str, Any]]) -> None:
    if path.is_dir():
        for name, image in images:
            write_file(path / name, _encoded(image, "PNG"))
        return
    created = _make_directories(path.parent)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        staging.mkdir()
        for name, image in images:
            (staging / name).write_bytes(_encoded(image, "PNG"))
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for directory in reversed(created):
            with suppress(OSError):
                directory.rmdir()
        raise


def _make_directories(directory: Path) -> list[Path]:
    """Create `directory` and the parents it lacks; the ones created, outermost first."""
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole: a temporary file beside it, synced, renamed over it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            temporary.unlink()
        raise
