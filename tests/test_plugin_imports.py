"""Plugins use only the public API: what `nlptoolkit` exports in its __all__.

The rule (GUIDE.md, "Architecture rules"): a plugin imports nlptoolkit names
only as ``from nlptoolkit import X`` with X in ``nlptoolkit.__all__``, never
``nlptoolkit.sub.module``, and never another plugin; what two plugins share
belongs in the core. Checked on the source (AST), for the built-in plugins,
the example package, and the skeleton `nlptk new-plugin` writes.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import List

import pytest

import nlptoolkit
from conftest import REPO

PLUGIN_PACKAGES = {"nlptoolkit_plugins", "plugins", "nlptk_plugin_example"}


def plugin_files() -> List[Path]:
    return sorted((REPO / "plugins").glob("*.py")) + sorted((REPO / "examples" / "nlptk-plugin-example" / "src").rglob("*.py"))


def violations(source: str, own_package: str = "") -> List[str]:
    """Each import that breaks the rule, as 'line N: what'."""
    exported = set(nlptoolkit.__all__)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if alias.name.startswith("nlptoolkit.") or alias.name.startswith("nlptoolkit_"):
                    found.append(f"line {node.lineno}: import {alias.name} (use `from nlptoolkit import X`)")
                elif top in PLUGIN_PACKAGES:
                    found.append(f"line {node.lineno}: import {alias.name} (a plugin imports no other plugin)")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: only within the plugin's own package, never to a sibling plugin module
                if own_package in ("", "nlptoolkit_plugins", "plugins"):
                    found.append(f"line {node.lineno}: from {'.' * node.level}{module} import ... (a plugin imports no other plugin)")
            elif module == "nlptoolkit":
                found += [f"line {node.lineno}: from nlptoolkit import {a.name} (not in nlptoolkit.__all__)" for a in node.names if a.name not in exported]
            elif module.startswith("nlptoolkit."):
                found.append(f"line {node.lineno}: from {module} import ... (only `from nlptoolkit import X`)")
            elif module.split(".")[0] in PLUGIN_PACKAGES and module.split(".")[0] != own_package:
                found.append(f"line {node.lineno}: from {module} import ... (a plugin imports no other plugin)")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nlptoolkit":
            if node.attr not in exported:  # `import nlptoolkit` then nlptoolkit.X: X must be exported too
                found.append(f"line {node.lineno}: nlptoolkit.{node.attr} (not in nlptoolkit.__all__)")
    return found


@pytest.mark.parametrize("path", plugin_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_plugin_imports_only_what_nlptoolkit_exports(path: Path) -> None:
    own = "nlptk_plugin_example" if "nlptk_plugin_example" in path.parts else ""
    bad = violations(path.read_text(encoding="utf-8"), own)
    assert not bad, f"{path.relative_to(REPO)}: " + "; ".join(bad)


def test_the_skeleton_imports_only_what_nlptoolkit_exports() -> None:
    from nlptoolkit.scaffold import plugin_files as skeleton

    for name, text in skeleton("my_task").items():
        if name.endswith(".py"):
            assert not violations(text), (name, violations(text))


def test_every_exported_name_exists() -> None:
    assert len(set(nlptoolkit.__all__)) == len(nlptoolkit.__all__)
    for name in nlptoolkit.__all__:
        assert hasattr(nlptoolkit, name), name


def test_the_check_finds_each_kind_of_violation() -> None:
    source = "\n".join([
        "import nlptoolkit.data",                          # 1: a submodule
        "from nlptoolkit.data.vocab import Vocabulary",    # 2: a submodule
        "from nlptoolkit import Task, load_files",         # 3: load_files is not exported
        "from nlptoolkit_plugins.sentiment import X",      # 4: another plugin
        "from .sentiment import SentimentModel",           # 5: a sibling plugin module
        "import plugins.tagging",                          # 6: another plugin
        "import nlptoolkit",                               # fine, but then:
        "nlptoolkit.runs.train(None)",                     # 8: not exported
        "from nlptoolkit import RNNEncoder, Vocabulary",   # fine
        "import torch.nn.functional as F",                 # fine
    ])
    assert [v.split(":")[0] for v in violations(source)] == [f"line {i}" for i in (1, 2, 3, 4, 5, 6, 8)]
