"""`dfpir --help` and `dfpir info`, through the real Typer app."""

from __future__ import annotations

from typer.testing import CliRunner

from dfpir_cli.cli import app, reflow

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output


def test_reflow_joins_lines_within_paragraphs_only():
    doc = """First line
    goes on.

    A paragraph
      continued.

      dfpir restore x
      -d hazy

    \b
    kept
    as written
    """
    assert reflow(doc) == "First line goes on.\n\nA paragraph continued.\n\n  dfpir restore x -d hazy\n\n\b\nkept\nas written"


def test_every_command_help_wraps_to_a_narrow_terminal():
    """No command's help keeps a source line break inside a paragraph (Rich would leave ragged half lines)."""
    for command in app.registered_commands:
        help_text = command.help or ""
        assert help_text and all("\n" not in paragraph for paragraph in help_text.split("\n\n")), command.name
        result = runner.invoke(app, [command.name, "--help"], terminal_width=80)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


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


def test_info_shows_the_recorded_weights_hash(micro_checkpoint) -> None:
    import hashlib

    result = CliRunner().invoke(app, ["info", str(micro_checkpoint)], terminal_width=200)
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256((micro_checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert digest[:24] in result.output and "(checked)" in result.output  # the table may wrap the rest
