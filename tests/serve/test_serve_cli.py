"""``medseg serve``'s refusals before it listens: one red line naming the file and the fix, exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from medseg.cli.app import app


def serve(*args: str):
    return CliRunner().invoke(app, ["serve", *args])


def test_bad_settings_are_one_line_errors_with_exit_2(random_model, tmp_path):
    tokens = tmp_path / "tokens.txt"
    state = str(tmp_path / "state")
    result = serve(str(random_model), "--tokens", str(tokens), "--state", state)
    assert result.exit_code == 2 and "cannot read the tokens file" in result.output and str(tokens) in result.output
    tokens.write_text("short\n")
    result = serve(str(random_model), "--tokens", str(tokens), "--state", state)
    assert result.exit_code == 2 and "fewer than 8" in result.output
    tokens.write_text("a-long-enough-token\n")
    for extra, message in ((["--workers", "0"], "--workers 0 must be at least 1"),
                           (["--allowed-root", str(tmp_path / "nowhere")], "allowed root is not a folder"),
                           (["--rate-limit", "-1"], "--rate-limit -1.0 must be")):
        result = serve(str(random_model), "--tokens", str(tokens), "--state", state, *extra)
        assert result.exit_code == 2 and message in result.output, result.output
    result = serve(str(tmp_path / "no_model"), "--tokens", str(tokens), "--state", state)
    assert result.exit_code == 2 and "model folder not found" in result.output
    assert not (tmp_path / "state").exists()  # refused before anything was written
