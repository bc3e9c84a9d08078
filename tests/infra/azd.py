"""What `azd up` does with the repository, modelled closely enough to test offline: the parameter values it
passes to main.bicep for an azd environment (main.parameters.json's `${...}` references substituted), and the
files it packages for the Function App (.funcignore's rules applied by git itself).

Parameters: azd substitutes `${NAME}` and `${NAME=default}` inside JSON strings (only inside strings: an object
parameter from an environment value needs a recent azd, Azure/azure-dev PR #6694); a value that comes out empty is
left out (azd 1.15 and newer, the version azure.yaml requires), so the template's default applies.

Package: azd zips the service's `project` folder minus what its .funcignore (gitignore syntax) lists. Here git
applies the same file as an exclude list to a copy of the repository, so anchoring (`/docs/`), folder patterns
(`tests/`), globs and negations mean what they mean to gitignore.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.infra import bicep

ROOT = bicep.ROOT
PARAMETERS_FILE = ROOT / "infra" / "main.parameters.json"
FUNCIGNORE = ROOT / ".funcignore"
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:=([^}]*))?\}")


def references(text: str) -> list[tuple[str, str | None]]:
    """Every `${NAME}` / `${NAME=default}` in a parameter value, as (NAME, default or None)."""
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(text)]


def substitute(text: str, env: Mapping[str, str]) -> str:
    """A parameter value with its references replaced: the environment's value, else the default, else ''."""
    return REFERENCE.sub(lambda m: env.get(m.group(1), m.group(2) or ""), text)


def parameter_file() -> dict[str, Any]:
    return json.loads(PARAMETERS_FILE.read_text())["parameters"]


def parameters(env: Mapping[str, str]) -> dict[str, Any]:
    """main.bicep's parameter values azd passes for an azd environment holding ``env``."""
    values: dict[str, Any] = {}
    for name, entry in parameter_file().items():
        value = entry["value"]
        if isinstance(value, str):
            assert "${" not in REFERENCE.sub("", value), f"{name}: a reference azd's substitution would not read"
            value = substitute(value, env)
            if value == "":
                continue  # left out: main.bicep's default applies
        values[name] = value
    return values


def project_folder() -> Path:
    """The folder azd packages for the Function App (azure.yaml's only service's `project`)."""
    services = yaml.safe_load((ROOT / "azure.yaml").read_text())["services"]
    [service] = services.values()
    assert service["host"] == "function"
    return (ROOT / service["project"]).resolve()


def repository_files() -> list[str]:
    """The repository's files as a clone has them (tracked, and new ones not git-ignored), relative to its root."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({p for p in listed.split("\0") if p and (ROOT / p).is_file()})


def packaged(tree: Path, funcignore: Path = FUNCIGNORE) -> set[str]:
    """The files under ``tree`` that azd's package holds: every file ``funcignore`` does not leave out."""
    git_dir = tree.parent / f".{tree.name}.git"
    env = {**os.environ, "GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(tree)}
    subprocess.run(["git", "init", "-q"], cwd=tree, env=env, check=True)
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--others", f"--exclude-from={funcignore}"],
            cwd=tree,
            env=env,
            capture_output=True,
            check=True,
        ).stdout.decode()
    finally:
        shutil.rmtree(git_dir)
    return {p for p in listed.split("\0") if p}


def checkout(destination: Path, extra: Mapping[str, str] | None = None, files: Iterable[str] | None = None) -> Path:
    """A copy of the repository (symbolic links to its files) in ``destination``, with ``extra`` files added
    (path relative to the root -> text): a user's clone with their own flows in it."""
    for rel in repository_files() if files is None else files:
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ROOT / rel)
    for rel, text in (extra or {}).items():
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return destination


def package(tree: Path, destination: Path) -> Path:
    """What the Function App runs from: the files of ``tree`` the package holds, copied to ``destination``."""
    for rel in packaged(tree):
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / rel, target)
    return destination
