"""`dfpir --help` and `dfpir info`, through the real Typer app."""

from __future__ import annotations

from typer.testing import CliRunner

from dfpir_cli.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output


def test_info_lists_presets_and_degradations():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "31,104,761" in result.output
    assert "lowlight" in result.output and "hazy" in result.output


def test_info_describes_a_checkpoint(micro_checkpoint):
    result = runner.invoke(app, ["info", str(micro_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "random" in result.output and "noise25" in result.output


def test_info_on_a_bad_path_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_info_env_reports_what_a_bug_report_needs():
    import json

    result = runner.invoke(app, ["info", "--env", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("python", "dfpir-cli", "torch", "numpy", "cv2 (imported)", "torch CUDA build", "device (auto)",
                "CPU native bf16"):
        assert report[key], key
    assert report["CPU native bf16"] in ("True", "False")
    assert report["freed memory kept"].startswith(("yes", "no"))
    table = runner.invoke(app, ["info", "--env"])
    assert table.exit_code == 0 and "bug reports" in table.output and report["torch"] in table.output
