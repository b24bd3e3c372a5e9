"""The test suite runs on a fresh clone: fixtures inside the repository, real test splits found or skipped loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES, find_realsets

from dfpir_cli.data.test_sets import find_dataset


def test_reference_fixtures_ship_inside_the_repository():
    repository = Path(__file__).resolve().parents[1]
    assert FIXTURES.is_relative_to(repository)
    for name in ("dfpir_reference_tiny.json", "dfpir_reference_tiny.safetensors", "dfpir_reference_paper_keys.json"):
        assert (FIXTURES / name).is_file(), name


def test_missing_realsets_skip_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("DFPIR_REALSETS", str(tmp_path / "absent"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real test splits not found at .*absent.*DFPIR_REALSETS"):
        find_realsets()


def test_missing_realsets_fail_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("DFPIR_REALSETS", str(tmp_path / "absent"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        find_realsets()


def test_realsets_override_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("DFPIR_REALSETS", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert find_realsets() == tmp_path


def test_realsets_hold_the_layouts_eval_reads(realsets_dir):
    sizes = {name: sum(len(s.pairs) for s in find_dataset(name, realsets_dir / name, sigmas=(25,)))
             for name in ("CBSD68", "Rain100L", "LOL", "SOTS")}
    assert sizes == {"CBSD68": 68, "Rain100L": 100, "LOL": 15, "SOTS": 2}
