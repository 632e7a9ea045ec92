"""The repository on disk and the version policy, without a server: what a scan finds and
skips, what each policy picks, and the signature that tells a finished copy from one under way."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dcgan.service.repository import Repository, RepositoryError, VersionPolicy, signature


@pytest.mark.parametrize(
    ("text", "offered", "picked"),
    [
        ("latest", [1, 3, 2], [3]),
        ("latest:2", [1, 3, 2], [3, 2]),
        ("latest:5", [1, 2], [2, 1]),
        ("all", [2, 1, 10], [10, 2, 1]),
        ("specific:1,3", [1, 2, 3, 4], [3, 1]),
        ("specific:7", [1, 2], []),
    ],
)
def test_each_policy_picks_its_versions_newest_first(
    text: str, offered: list[int], picked: list[int]
) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.select(offered) == picked
    assert str(policy) == text


@pytest.mark.parametrize(
    "text", ["", "newest", "latest:0", "latest:-1", "latest:01", "all:2", "specific:", "specific:a"]
)
def test_a_policy_that_does_not_parse_says_why(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        VersionPolicy.parse(text)


def test_a_scan_finds_models_and_versions_and_skips_staging_and_strangers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for path in ("mnist/1", "mnist/12", "mnist/.3.ab12.tmp", "mnist/01", "mnist/v2",
                 "cifar-10/1", ".staging/1", "bad name/1"):  # fmt: skip
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "mnist" / "2").write_text("a file, not a version")
    repository = Repository(tmp_path)
    with caplog.at_level(logging.WARNING):
        found = repository.scan()
        repository.scan()  # skipped entries are logged once, not at every poll
    assert {name: sorted(versions) for name, versions in found.items()} == {
        "mnist": [1, 12],
        "cifar-10": [1],
    }
    skipped = sorted(record.getMessage() for record in caplog.records)
    assert len(skipped) == 3
    assert any("bad name: not a model name" in line for line in skipped)
    assert any("01: not a version" in line for line in skipped)
    assert any("v2: not a version" in line for line in skipped)


def test_a_repository_that_is_missing_or_a_file_is_refused_before_a_port_opens(
    tmp_path: Path,
) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        Repository(tmp_path / "missing").check()
    (tmp_path / "file").write_text("")
    with pytest.raises(RepositoryError, match="is not a directory"):
        Repository(tmp_path / "file").check()
    with pytest.raises(RepositoryError, match="cannot read"):
        Repository(tmp_path / "missing").scan()


def test_the_signature_changes_as_a_copy_goes_on_and_not_otherwise(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    (version / "manifest.json").write_text("{}")
    before = signature(version)
    assert signature(version) == before
    with open(version / "generator_serving.onnx", "wb") as handle:
        handle.write(b"x" * 10)
    during = signature(version)
    assert during != before
    with open(version / "generator_serving.onnx", "ab") as handle:
        handle.write(b"y")
    assert signature(version) != during
    os.utime(version / "manifest.json", ns=(1, 1))  # touched: it may have been rewritten
    assert signature(version) != during
    assert signature(tmp_path / "gone") == ()
