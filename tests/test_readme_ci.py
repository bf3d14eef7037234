"""The README's two set-up commands are what CI runs."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    out = subprocess.run(["bash", "-c", "awk '/^```bash$/{getline; print}' README.md | head -n 2"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    install, tests = out
    assert 'pip install -e ".[all,dev]"' in install and install.endswith("fusionweave demo")
    assert "pytest" in tests and tests.endswith("python -m benchmarks --size ci")  # CI runs every benchmark small
    readme = (ROOT / "README.md").read_text()
    assert readme.index(install) < readme.index(tests) < readme.index("## Usage")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "awk '/^```bash$/{getline; print}' README.md | head -n 2" in ci
