"""The results of dcgan-export's checks, as the `parity` list of `manifest.json` records them.

dcgan-export produces them and anything that reads a manifest (dcgan-serve among them) gets them
back typed, so they live beside the manifest in dcgan-protos, which imports neither torch nor
onnx. On disk each result is one flat JSON object, and the three kinds are told apart by their
keys: `skipped` marks a check that could not run, `check` a structure check, and the rest are
comparisons. Parsing is strict: a missing, unknown or mistyped field is a ValueError, which
`Manifest.from_dict` reports as a malformed manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NONE = type(None)


@dataclass(frozen=True)
class PixelMismatch:
    """How the serving graph's uint8 pixels differ from the float image post-processed in NumPy."""

    differing_pixels: int
    all_rounding_ties: bool  # every differing pixel is a value at k + 0.5, rounded either way


@dataclass(frozen=True)
class ParityResult:
    """An artifact compared with its reference at one batch size on one runtime."""

    artifact: str
    reference: str
    runtime: str
    batch_size: int
    max_abs_error: float  # for a pixel comparison: the largest difference, in levels of 0..255
    tolerance: str
    passed: bool
    pixels: PixelMismatch | None = None  # the serving graph's `pixels` output only
    compute_dtype: str | None = None  # the float16 graph only: the precision that really ran
    note: str | None = None  # what the comparison does not show, in a sentence

    def describe(self) -> str:
        if self.pixels is None:
            error = f"max abs error {self.max_abs_error:.3g}"
        else:
            which = "all" if self.pixels.all_rounding_ties else "not all"
            error = f"{self.pixels.differing_pixels} pixels differ, {which} of them rounding ties"
        return (
            f"{self.artifact} at batch size {self.batch_size} on {self.runtime}: "
            f"{error} against {self.reference} (tolerance {self.tolerance})"
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "artifact": self.artifact,
            "reference": self.reference,
            "runtime": self.runtime,
            "batch_size": self.batch_size,
            "max_abs_error": self.max_abs_error,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }
        if self.pixels is not None:
            data["differing_pixels"] = self.pixels.differing_pixels
            data["all_rounding_ties"] = self.pixels.all_rounding_ties
        if self.compute_dtype is not None:
            data["compute_dtype"] = self.compute_dtype
        if self.note is not None:
            data["note"] = self.note
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityResult:
        fields = _fields(
            data,
            "comparison",
            required={
                "artifact": str,
                "reference": str,
                "runtime": str,
                "batch_size": int,
                "max_abs_error": float,
                "tolerance": str,
                "passed": bool,
            },
            optional={
                "differing_pixels": int,
                "all_rounding_ties": bool,
                "compute_dtype": str,
                "note": str,
            },
        )
        pixel_keys = ("differing_pixels", "all_rounding_ties")
        pixels = None
        if any(key in fields for key in pixel_keys):
            if not all(key in fields for key in pixel_keys):
                raise ValueError(f"a comparison holds one of {', '.join(pixel_keys)} only")
            pixels = PixelMismatch(fields.pop("differing_pixels"), fields.pop("all_rounding_ties"))
        return cls(**fields, pixels=pixels)


@dataclass(frozen=True)
class StructureResult:
    """One ONNX file checked on its own: onnx.checker, shape inference, interface and metadata."""

    artifact: str
    check: str  # what was checked, in words
    passed: bool
    detail: str  # the problems found, or what was confirmed

    def describe(self) -> str:
        return (
            f"{self.artifact}: {self.check} {'passed' if self.passed else 'failed'}: {self.detail}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "check": self.check,
            "passed": self.passed,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StructureResult:
        required = {"artifact": str, "check": str, "passed": bool, "detail": str}
        return cls(**_fields(data, "structure check", required))


@dataclass(frozen=True)
class SkippedCheck:
    """A check that could not run here, such as CUDA on a machine where it does not start."""

    artifact: str
    runtime: str
    reason: str

    def describe(self) -> str:
        return f"{self.artifact} on {self.runtime}: not checked ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "runtime": self.runtime,
            "passed": None,
            "skipped": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkippedCheck:
        required: dict[str, type] = {
            "artifact": str,
            "runtime": str,
            "passed": NONE,
            "skipped": str,
        }
        fields = _fields(data, "skipped check", required)
        return cls(artifact=fields["artifact"], runtime=fields["runtime"], reason=fields["skipped"])


CheckResult = ParityResult | StructureResult | SkippedCheck


def check_result_from_dict(data: Any) -> CheckResult:
    """One record of the manifest's `parity` list, as the kind its keys say it is."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a {type(data).__name__}, not a JSON object")
    if "skipped" in data:
        return SkippedCheck.from_dict(data)
    if "check" in data:
        return StructureResult.from_dict(data)
    return ParityResult.from_dict(data)


def _fields(
    data: Mapping[str, Any],
    what: str,
    required: Mapping[str, type],
    optional: Mapping[str, type] | None = None,
) -> dict[str, Any]:
    """`data`'s values, each checked against its type; an int stands for a float, never a bool."""
    types = {**required, **(optional or {})}
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ValueError(f"a {what} has unexpected fields {unknown}")
    fields: dict[str, Any] = {}
    for key, expected in types.items():
        if key not in data:
            if key in required:
                raise ValueError(f"a {what} has no {key!r}")
            continue
        value = data[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            wanted = "null" if expected is NONE else expected.__name__
            raise ValueError(f"a {what}'s {key} is {value!r}, not {wanted}")
        fields[key] = value
    return fields
