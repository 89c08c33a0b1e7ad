"""Maps the top-level folders onto the `synthvox.*` namespace.

The folders stay at the top level (core/, engine/, pipelines/, ...) but install as
`synthvox.core`, `synthvox.engine`, `synthvox.pipelines`, ... so that an installed synthvox never puts
packages called `engine` or `train` into a user's site-packages. Everything else is in
pyproject.toml.
"""
from setuptools import find_packages, setup

PARTS = ("core", "engine", "pipelines", "train", "downstream", "api", "cli")

packages: list[str] = []
package_dir: dict[str, str] = {}
for part in PARTS:
    package_dir[f"synthvox.{part}"] = part
    packages.append(f"synthvox.{part}")
    packages += [f"synthvox.{part}.{sub}" for sub in find_packages(part)]

# the bundled pretrained checkpoint travels with the package (train/bundled/)
setup(packages=packages, package_dir=package_dir, package_data={"synthvox.train": ["bundled/*"]})
