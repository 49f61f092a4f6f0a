"""The package as users install it: sdist -> wheel -> a fresh venv, run from elsewhere.

`python -m build` makes the sdist, then the wheel from the sdist (what pip and pipx
do with a checkout), so a file missing from either shows up here. The wheel goes into
a new virtual environment with its dependencies, and the commands run from a folder
outside the repository, so nothing can be found through the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest

from conftest import ROOT

# One worker runs the module: the wheel is built once, for every test.
pytestmark = [pytest.mark.wheel, pytest.mark.xdist_group("wheel")]

IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "out", "build", "dist", "*.egg-info", "__pycache__", ".*cache"
)


def subpackages() -> set[str]:
    return {
        str(p.parent.relative_to(ROOT))
        for p in (ROOT / "generator").rglob("__init__.py")
    }


def templates() -> set[str]:
    return {
        str(p.relative_to(ROOT / "templates"))
        for p in (ROOT / "templates").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "Package would be ignored" not in built.stdout + built.stderr
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return work, wheel, sdist


def test_the_wheel_carries_every_subpackage_and_template(dist):
    _, wheel, _ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in subpackages():
        assert f"{package}/__init__.py" in names, package
    for module in (ROOT / "generator").rglob("*.py"):  # every module of every package
        assert str(module.relative_to(ROOT)) in names, module
    for template in templates():
        assert f"generator/templates/{template}" in names, template
    assert {
        "generator/catalog.yaml",
        "generator/catalog.json",
        "generator/profile.schema.json",
    } <= names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rulegen = generator:run" in zipfile.ZipFile(wheel).read(entry).decode()
    # Ready to publish: the licence text, the project's links and classifiers.
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    )
    meta = meta.decode()
    assert "License-Expression: Apache-2.0" in meta
    assert "Project-URL: Homepage, https://" in meta
    assert "Classifier: Topic :: System :: Networking :: Firewalls" in meta


def test_the_sdist_keeps_templates_at_the_top(dist):
    _, _, sdist = dist
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {f"templates/{t}" for t in templates()} <= names
    assert {"setup.py", "pyproject.toml", "README.md"} <= names


def test_installed_wheel_runs_from_outside_the_repo(dist):
    work, wheel, _ = dist
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    profile = elsewhere / "prod.yaml"
    shutil.copy(ROOT / "profiles" / "aws-private-vpn.yaml", profile)

    def rulegen(*args):
        return subprocess.run(
            [str(env_dir / "bin" / "rulegen"), *map(str, args)],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
        )

    version = rulegen("--version")
    assert version.returncode == 0 and version.stdout.startswith("rulegen, version ")
    where = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            "import generator; print(generator.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    assert str(env_dir) in where.stdout and str(ROOT) not in where.stdout

    plan = rulegen("plan", profile, "--format", "json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["profile"] == "acme-prod"
    generate = rulegen("generate", profile)
    assert generate.returncode == 0, generate.stderr
    out = elsewhere / "out" / "acme-prod"
    assert (out / "terraform-aws" / "main.tf").read_text().strip()
    assert (out / "cloudformation" / "template.yaml").read_text().strip()
    diff = rulegen("diff", profile, profile, "--new-version", "4.3")
    assert diff.returncode == 2 and "removed" in diff.stdout, diff.stderr
    explain = rulegen(
        "explain",
        profile,
        "--from",
        "nomad_clients",
        "--to",
        "load_balancer",
        "--port",
        "4647",
    )
    assert explain.returncode == 0 and ": allowed" in explain.stdout, explain.stderr
    init = rulegen("init", "--cloud", "generic")
    assert init.returncode == 0 and "cloud: generic" in init.stdout, init.stderr
