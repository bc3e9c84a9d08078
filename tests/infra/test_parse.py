"""Every .bicep file under infra/ parses with both offline parsers: tree-sitter-bicep (the syntax
tree the other infra tests read) and pycep-parser (the parser checkov uses; checkov's own, older
pycep-parser runs in `make infra-check`). Modules referenced by a template exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from pycep import BicepParser

from tests.infra import bicep

FILES = bicep.bicep_files()
IDS = [str(p.relative_to(bicep.INFRA)) for p in FILES]


def test_the_deployment_has_its_templates():
    names = {str(p.relative_to(bicep.INFRA)) for p in FILES}
    assert {"main.bicep", "eventgrid.bicep"} <= names
    assert len(names) >= 8, names


def test_tree_sitter_reports_a_broken_template():
    """The parse test below would prove nothing if the grammar accepted anything."""
    assert bicep.syntax_errors(b"resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n  kind: \n")
    assert bicep.syntax_errors(b"param p string = \n") or bicep.syntax_errors(b"param = 'x'\n")
    assert not bicep.syntax_errors(b"param p string = 'x'\n")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_parses_with_tree_sitter_bicep(path: Path):
    errors = bicep.syntax_errors(path.read_bytes())
    assert not errors, f"{path.name}: syntax errors at {errors}"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_parses_with_pycep(path: Path):
    parsed = BicepParser().parse(file_path=path)
    template = bicep.load(path)
    # Both parsers see the same declarations.
    assert set(parsed.get("parameters", {})) == set(template.params)
    assert set(parsed.get("resources", {})) == set(template.resources)
    assert set(parsed.get("modules", {})) == set(template.modules)
    assert set(parsed.get("outputs", {})) == set(template.outputs)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_referenced_modules_exist(path: Path):
    for module in bicep.load(path).modules.values():
        target = (path.parent / module.type).resolve()
        assert target.is_file(), f"{path.name}: module {module.name} -> {module.type} does not exist"
        assert target.is_relative_to(bicep.INFRA)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_declaration_is_described(path: Path):
    """Parameters carry a @description (azd and the portal show it), unless a module's own
    pass-through parameter whose name says it all (a *Name of a resource made elsewhere)."""
    template = bicep.load(path)
    undescribed = [
        name
        for name, decl in template.params.items()
        if "description" not in decl.decorators and not name.endswith(("Name", "PrincipalId"))
    ]
    assert not undescribed, f"{path.name}: parameters without @description: {undescribed}"


def test_checkov_skips_are_justified_next_to_their_resource():
    """Each `checkov:skip` carries a reason of a sentence or more (make infra-check enforces the
    same on checkov's own report)."""
    found = 0
    for path in FILES:
        template = bicep.load(path)
        blocks = [
            (d.node.start_point[0] + 1, d.node.end_point[0] + 1, d.name)
            for d in [*template.resources.values(), *template.params.values()]
        ]
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip=" not in line:
                continue
            found += 1
            # checkov reads suppressions inside the block it reports (a parameter's block starts
            # at its first decorator).
            decorators_start = {d.name: d.node.prev_named_sibling for d in template.params.values()}
            inside = [
                name
                for start, end, name in blocks
                if start <= number <= end
                or (
                    decorators_start.get(name) is not None
                    and decorators_start[name].type == "decorators"
                    and decorators_start[name].start_point[0] + 1 <= number <= end
                )
            ]
            assert inside, f"{path.name}:{number}: the skip is outside any resource or parameter block"
            check, _, reason = line.split("checkov:skip=", 1)[1].partition(":")
            assert check.startswith(("CKV_", "CKV2_")), f"{path.name}:{number}: {line.strip()}"
            assert len(reason.strip()) >= 40, f"{path.name}:{number}: skip of {check} needs a reason"
    assert found, "no checkov skips found: the gate in make infra-check expects justified ones"


def test_same_named_symbols_agree_across_templates():
    """checkov's Bicep graph links a reference to *a* parameter or variable of that name in any
    file (checkov 3.3.30 keys its vertices by bare name), so two templates declaring one name with
    different values make its results depend on file order. Found the hard way: a storage
    `skuName` and an AI services `skuName` flipped CKV_AZURE_206 between runs."""
    seen: dict[str, tuple[str, str]] = {}
    for path in FILES:
        template = bicep.load(path)
        for decl in [*template.params.values(), *template.variables.values()]:
            if decl.kind == "param" and not decl.has_default:
                continue
            value = bicep.src(decl.value)
            if decl.name in seen:
                other_file, other_value = seen[decl.name]
                assert value == other_value, (
                    f"{decl.name}: {path.name} has {value}, {other_file} has {other_value}; rename one"
                )
            else:
                seen[decl.name] = (path.name, value)


def _referenced_identifiers(node, declared_at: set[int]) -> set[str]:
    found: set[str] = set()

    def walk(n) -> None:
        if n.type == "object_property":
            # A bare key is a name, not a reference: walk the value, and the key only when it is a
            # string (its interpolations, e.g. '${identityId}': {}, are references).
            named = [c for c in n.children if c.is_named and c.type != "comment"]
            for child in named[1:] if named and named[0].type != "string" else named:
                walk(child)
            return
        if n.type == "identifier" and n.start_byte not in declared_at:
            found.add(n.text.decode())
        for child in n.children:
            walk(child)

    walk(node)
    return found


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_unused_parameters_or_variables(path: Path):
    """What the Bicep linter's no-unused-params / no-unused-vars would say (the CLI is not
    available offline)."""
    template = bicep.load(path)
    declared_at = {d.node.named_children[0].start_byte for d in template.decls.values()}
    declared_at |= {d.node.named_children[0].start_byte for d in template.outputs.values()}
    root = bicep.parser().parse(path.read_bytes()).root_node
    used = _referenced_identifiers(root, declared_at)
    unused = [n for n, d in template.decls.items() if d.kind in ("param", "var") and n not in used]
    assert not unused, f"{path.name}: declared but never used: {unused}"
