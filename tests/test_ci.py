"""CI runs the README's test command (`.ci/run`), a failure or "no tests ran" fails it, and the README says
which tests that command leaves out and how to run them all."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_test_command_and_the_readme_says_what_it_selects():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.*?)\n```", readme, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines(), (command, ci)
    assert "set -euo pipefail" in ci and "|| true" not in ci  # exit 5 (no tests) fails CI like a failure
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    deselected = re.search(r"-m\s+'([^']*)'", opts["addopts"])
    if deselected:  # what the default run leaves out is said next to the command, with the way to run it all
        assert deselected.group(1) == "not slow" and "`slow`" in readme and 'pytest -q -m ""' in readme
