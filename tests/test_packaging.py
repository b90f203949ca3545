"""Packaging: what `pip install` puts into site-packages, and that it matches the checkout."""
from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    return cfg


def listed(value: str) -> list:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_package_list_covers_every_package_folder():
    """setup.cfg lists packages by hand (plugins/ installs as nlptoolkit_plugins); a new
    subpackage left off the list would be missing from the wheel."""
    declared = set(listed(setup_cfg()["options"]["packages"]))
    core = set(find_packages(str(REPO), include=["nlptoolkit", "nlptoolkit.*"]))
    plugins = {"nlptoolkit_plugins" + name[len("plugins"):] for name in find_packages(str(REPO), include=["plugins", "plugins.*"])}
    assert declared == core | plugins | {"nlptoolkit.recipes"}  # recipes/: YAML files only
    assert all(name.split(".")[0] in ("nlptoolkit", "nlptoolkit_plugins") for name in declared)
