"""Builds the wheel with the shipped content inside it.

The content folders stay at the top of the checkout, where users read and edit them and where
the tests and docs name them (``topologies/fob.yaml``). A wheel copies them into the package as
``cyberrange/_content/<folder>/``, where ``cyberrange.content`` finds them when the package is
installed; an editable install reads them from the checkout instead. Everything else is in
pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONTENT = ("topologies", "attack_playbooks", "detectors", "labs", "responses", "kibana")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class build_py_with_content(build_py):
    """``build_py`` plus the content folders, copied into ``cyberrange/_content/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return                      # editable: cyberrange.content reads the checkout
        here = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "cyberrange" / "_content"
        for name in CONTENT:
            if (here / name).is_dir():
                shutil.rmtree(target / name, ignore_errors=True)
                shutil.copytree(here / name, target / name, ignore=SKIP)


setup(cmdclass={"build_py": build_py_with_content})
