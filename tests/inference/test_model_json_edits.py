"""A model folder whose model.json was edited by hand: every broken field is one line naming model.json and a fix
(exit 2), never a traceback; plan and fingerprint keep an existing output file unless --overwrite."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from medseg.cli.app import app

EDITS = {
    "unknown network": (lambda s: s["network"].update(name="no_such_net"), "unknown network 'no_such_net'"),
    "unknown option": (lambda s: s["network"]["options"].update(bogus=1), "has no option bogus"),
    "unknown task": (lambda s: s.update(task="weird"), "unknown model task 'weird'"),
    "too few label values": (lambda s: s.update(label_values=[0]), "1 label values [0] for a network with"),
    "schema not a number": (lambda s: s.update(schema_version="two"), "schema_version 'two', not a number"),
    "network missing": (lambda s: s.pop("network"), "incomplete or malformed"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_hand_edited_model_json_is_one_line_naming_it(tmp_path, shapes_model_2d, shapes_dataset, edit):
    change, message = EDITS[edit]
    model = tmp_path / "model"
    shutil.copytree(shapes_model_2d, model)
    spec = json.loads((model / "model.json").read_text())
    change(spec)
    (model / "model.json").write_text(json.dumps(spec))
    image = sorted((shapes_dataset / "imagesTr").iterdir())[0]
    result = CliRunner().invoke(app, ["predict", "-i", str(image), "-o", str(tmp_path / "out"), "-m", str(model)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(model / "model.json") in lines[0] and message in lines[0]
    assert "fix:" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", ["plan", "fingerprint"])
def test_plan_and_fingerprint_keep_an_existing_output_unless_overwrite(tmp_path, shapes_dataset, command):
    output = tmp_path / f"{command}.json"
    output.write_text('{"edited": "by hand"}')
    extra = ["--flops", "1e10"] if command == "plan" else []
    runner = CliRunner()
    refused = runner.invoke(app, [command, str(shapes_dataset), "-o", str(output), *extra])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert output.read_text() == '{"edited": "by hand"}'
    replaced = runner.invoke(app, [command, str(shapes_dataset), "-o", str(output), "--overwrite", *extra])
    assert replaced.exit_code == 0, replaced.output
    assert "edited" not in json.loads(output.read_text())
