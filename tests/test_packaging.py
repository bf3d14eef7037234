"""The package installs as one namespace, `fusionweave.*`, with its recipes inside it: no bare
top-level imports anywhere, and a wheel that holds every package and every shipped YAML."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("orchestration", "pipelines", "transforms", "experts", "datasets_cards", "trainers", "configs")
SCANNED = (*FOLDERS, "tests", "benchmarks")


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def test_no_bare_imports_of_our_packages() -> None:
    bare = []
    for folder in SCANNED:
        for f in sorted((ROOT / folder).rglob("*.py")):
            for line, name in _imports(ast.parse(f.read_text(), str(f))):
                if name.split(".")[0] in FOLDERS:
                    bare.append(f"{f.relative_to(ROOT)}:{line}: {name}")
    assert not bare, "import these as fusionweave.<package>: " + "; ".join(bare[:10])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    src = tmp_path_factory.mktemp("src") / "fusionweave"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                              "__pycache__", ".pytest_cache", "fusionweave-demo"))
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = dist.glob("fusionweave-*.whl")
    return whl


def test_wheel_is_one_namespace_with_every_package_and_recipe(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"fusionweave"}, tops
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"fusionweave/{rel}" in names, f"{rel} is not in the wheel (list its package in pyproject.toml)"
    yamls = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert yamls and all(f"fusionweave/{y}" in names for y in yamls), [y for y in yamls if f"fusionweave/{y}" not in names]
    assert not [n for n in names if n.startswith("fusionweave/tests/") or n.startswith("fusionweave/benchmarks/")]


def test_wheel_install_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """A non-editable install, used from another folder, finds its recipes and prompt template
    (the dependencies are borrowed from this environment, not reinstalled)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # a plain path entry: this environment's packages, without its editable finder for fusionweave
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # unpacked by hand: `pip install --prefix` would first uninstall this environment's own fusionweave
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import fusionweave.orchestration.cli as c, fusionweave.configs as k, fusionweave.transforms.prompts as p;"
            "assert k.packaged('demo.yaml').is_file() and p.DEFAULT_TEMPLATE.is_file();"
            "print(c.__file__); p.Template.load()")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert str(site) in r.stdout and str(ROOT) not in r.stdout
    # the console script's shebang names the installing interpreter, so call the entry point itself
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "fusionweave.orchestration.cli", "--help"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "build" in r.stdout


def test_the_cli_starts_without_torch() -> None:
    # every `fusionweave` call (and every CLI test) paid ~1.5 s for torch through the method
    # registry and webdataset; commands that run models import it when they run
    code = ("import sys\nfrom fusionweave.orchestration import cli\n"
            "rc = cli.main(['build', 'curate', '--config', '/nonexistent/recipe.yaml', '--out', '/nonexistent/out'])\n"
            "print(rc, 'fusionweave.orchestration.commands' in sys.modules, "
            "sorted({'torch', 'webdataset', 'ray'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "2 True []", r.stdout + r.stderr
