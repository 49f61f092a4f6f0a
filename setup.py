"""What the wheel and the sdist carry; the project's metadata is in pyproject.toml.

Every package under generator/ is found, so a new subpackage ships without an edit
here. templates/ stays at the top of the repository and ships inside the package as
generator.templates, which templating.py finds as that package's folder.
"""

from pathlib import Path

from setuptools import find_packages, setup

# Template folders named like Python packages are listed as such, or setuptools
# warns that it sees a package it was not told about.
TEMPLATE_PACKAGES = sorted(
    f"generator.templates.{d.name}"
    for d in Path(__file__).parent.joinpath("templates").iterdir()
    if d.is_dir() and d.name.isidentifier() and not d.name.startswith("_")
)

setup(
    packages=find_packages(include=["generator", "generator.*"])
    + ["generator.templates"]
    + TEMPLATE_PACKAGES,
    package_dir={"generator.templates": "templates"},
    package_data={
        "generator": ["*.yaml", "*.json"],
        "generator.templates": ["**/*.j2", "**/*.css"],
    },
)
