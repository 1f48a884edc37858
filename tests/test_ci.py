"""CI runs every test (issue 21.9): `.ci/run` is the README's test command, and pytest's defaults select no marker."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_test_command_and_it_selects_every_test():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests.*?```bash\n(.*?)\n```", readme, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines(), (command, ci)
    assert "set -euo pipefail" in ci and "|| true" not in ci and not re.search(r"pytest.* -m\b", command)  # exit 5 (no tests) fails CI
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert not re.search(r"(^|\s)-m(\s|=|$)", opts["addopts"]), opts["addopts"]  # no marker deselected by default
    assert '-m "not slow"' in readme  # the quick development loop is documented
