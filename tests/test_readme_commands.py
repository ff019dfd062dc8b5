"""The README's two quick-start commands are what CI runs, verbatim and in order, and the set-up command installs
every program the tests need (a fresh machine gets no more than those two commands)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    """The indented command lines of the README's Quick start section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if re.match(r"^    \S", line)]


def test_ci_runs_the_readme_commands_verbatim_in_order():
    setup, tests = quick_start_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    commands = [line for line in ci_lines if not line.startswith(("set ", "cd "))]
    assert commands == [setup, tests]
    assert setup.endswith("medseg demo") and tests == "python -m pytest -q"


def test_setup_command_installs_the_browser_the_browser_test_drives():
    setup, _ = quick_start_commands()
    script = setup.split("&&")[0].split()[-1]
    assert (ROOT / script).is_file(), f"{script} is named by the README but missing"
    body = (ROOT / script).read_text()
    browser_test = (ROOT / "tests" / "interactive" / "test_interactive_browser.py").read_text()
    for program in re.findall(r'"/usr/bin/(\w[\w-]*)"', browser_test):
        assert program in body, f"the browser test drives {program} but {script} does not install it"
    # after the set-up command (which this test suite runs after), the programs are there
    assert shutil.which("chromium") and shutil.which("chromedriver")
