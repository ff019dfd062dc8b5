"""The command line: every command has help, start-up imports no heavy library, user errors exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg.cli.app import COMMANDS, app


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(app, [*name.split(), "--help"])  # "model upgrade": a command of a group
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_start_up_imports_no_heavy_library() -> None:
    code = ("import sys, medseg.cli.app; "
            "print(sorted(m for m in ('torch', 'SimpleITK', 'scipy', 'matplotlib', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_user_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "medseg", "check", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and "dataset folder not found" in result.stderr


def test_example_data_check_fingerprint_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    root = tmp_path / "example"
    assert runner.invoke(app, ["example-data", str(root), "--cases", "2"]).exit_code == 0
    result = runner.invoke(app, ["check", str(root)])
    assert result.exit_code == 0 and "2 cases checked, no problems" in result.output
    again = runner.invoke(app, ["example-data", str(root)])
    assert again.exit_code == 2
