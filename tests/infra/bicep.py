"""A small model of the Bicep templates under infra/, built from tree-sitter-bicep's syntax tree.

tree-sitter keeps what a Bicep expression *is* (a string literal, an identifier, a member access,
a call, an interpolated string), which the tests need to follow a value from the Function App's
app settings back to the parameter, variable or module output it comes from. pycep-parser is
used by the parse test only (it is the parser checkov uses, in an older version there).

Values:
  literal string / number / bool / null  -> str / int / bool / None
  object / array                         -> dict / list (keys and items converted)
  identifier                             -> Ref(name)
  a.b.c                                  -> Member(Ref('a'), 'b') ... (nested)
  f(x, y)                                -> Call('f', (x, y))
  'x${e}y'                               -> Interp(('x', e, 'y'))
  c ? a : b                              -> Cond(c, a, b)
  !x, a == b, ...                        -> Op(op, operands)
Each non-literal keeps its source text in ``.src``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter as ts
import tree_sitter_bicep as tsb

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
LANGUAGE = ts.Language(tsb.language())


def parser() -> ts.Parser:
    return ts.Parser(LANGUAGE)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def app_functions() -> dict[str, Any]:
    """The app's functions by name, as the Functions host indexes them.

    FunctionApp.get_functions() checks names against state it keeps from its previous call, so a
    second call in one process raises: build each function without it and leave the app untouched.
    """
    import function_app

    app = function_app.app
    functions = [builder.build(app.auth_level) for builder in app._function_builders]
    return {f.get_function_name(): f for f in functions}


def syntax_errors(source: bytes) -> list[str]:
    """Every ERROR or MISSING node of the tree, as 'line:col text'."""
    found: list[str] = []

    def walk(node: ts.Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            found.append(f"{row + 1}:{col + 1} {node.type} {node.text.decode(errors='replace')[:60]!r}")
        for child in node.children:
            walk(child)

    walk(parser().parse(source).root_node)
    return found


# ---- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    name: str

    @property
    def src(self) -> str:
        return self.name


@dataclass(frozen=True)
class Member:
    obj: Any
    prop: str
    src: str = field(compare=False)

    def chain(self) -> tuple[Any, tuple[str, ...]]:
        """(root expression, property names) of a.b.c."""
        obj, props = self.obj, [self.prop]
        while isinstance(obj, Member):
            props.insert(0, obj.prop)
            obj = obj.obj
        return obj, tuple(props)


@dataclass(frozen=True)
class Index:
    obj: Any
    index: Any
    src: str = field(compare=False)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]
    src: str = field(compare=False)


@dataclass(frozen=True)
class Interp:
    parts: tuple[Any, ...]
    src: str = field(compare=False)


@dataclass(frozen=True)
class Cond:
    test: Any
    yes: Any
    no: Any
    src: str = field(compare=False)


@dataclass(frozen=True)
class Op:
    op: str
    operands: tuple[Any, ...]
    src: str = field(compare=False)


@dataclass(frozen=True)
class Raw:
    kind: str
    src: str


_ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


def _text(node: ts.Node) -> str:
    return node.text.decode()


def _named(node: ts.Node) -> list[ts.Node]:
    return [c for c in node.children if c.is_named and c.type != "comment"]


def convert(node: ts.Node) -> Any:
    kind = node.type
    if kind == "string":
        parts: list[Any] = []
        buffer = ""
        for child in node.children:
            if child.type == "string_content":
                buffer += _text(child)
            elif child.type == "escape_sequence":
                buffer += _ESCAPES.get(_text(child), _text(child))
            elif child.type == "interpolation":
                if buffer:
                    parts.append(buffer)
                    buffer = ""
                parts.append(convert(_named(child)[0]))
        if buffer:
            parts.append(buffer)
        if not parts:
            return ""
        if len(parts) == 1 and isinstance(parts[0], str):
            return parts[0]
        return Interp(tuple(parts), _text(node))
    if kind == "number":
        return int(_text(node))
    if kind == "boolean":
        return _text(node) == "true"
    if kind == "null":
        return None
    if kind in ("identifier", "property_identifier"):
        return Ref(_text(node))
    if kind == "object":
        result: dict[str, Any] = {}
        for prop in node.children:
            if prop.type != "object_property":
                continue
            key_node, value_node = _named(prop)[0], _named(prop)[-1]
            key = convert(key_node)
            result[key.name if isinstance(key, Ref) else key] = convert(value_node)
        return result
    if kind == "array":
        return [convert(c) for c in _named(node)]
    if kind == "member_expression":
        obj, prop = node.child_by_field_name("object"), node.child_by_field_name("property")
        if obj is None or prop is None:
            named = _named(node)
            obj, prop = named[0], named[-1]
        return Member(convert(obj), _text(prop), _text(node))
    if kind == "subscript_expression":
        named = _named(node)
        return Index(convert(named[0]), convert(named[-1]), _text(node))
    if kind == "call_expression":
        function = node.child_by_field_name("function") or _named(node)[0]
        arguments = next(c for c in node.children if c.type == "arguments")
        return Call(_text(function), tuple(convert(a) for a in _named(arguments)), _text(node))
    if kind == "parenthesized_expression":
        return convert(_named(node)[0])
    if kind == "ternary_expression":
        test, yes, no = _named(node)
        return Cond(convert(test), convert(yes), convert(no), _text(node))
    if kind == "unary_expression":
        return Op(_text(node.children[0]), (convert(_named(node)[0]),), _text(node))
    if kind == "binary_expression":
        left, right = _named(node)[0], _named(node)[-1]
        operator = next(c for c in node.children if not c.is_named)
        return Op(_text(operator), (convert(left), convert(right)), _text(node))
    return Raw(kind, _text(node))


def src(expr: Any) -> str:
    """Bicep-ish source text of an expression (literals rendered as Bicep literals)."""
    if isinstance(expr, str):
        return "'" + expr.replace("'", "\\'") + "'"
    if isinstance(expr, bool):
        return "true" if expr else "false"
    if expr is None:
        return "null"
    if isinstance(expr, int):
        return str(expr)
    if isinstance(expr, dict | list):
        return json.dumps(expr, default=src)
    return expr.src


# ---- declarations --------------------------------------------------------------------------------


@dataclass
class Decl:
    kind: str  # param, var, resource, module, output
    name: str
    node: ts.Node = field(repr=False)
    decorators: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    type: str = ""  # param/output type; resource 'Provider/type@version'; module path
    value: Any = None  # param default, var value, output value, resource/module body
    condition: Any = None  # `if (...)` of a resource or module
    existing: bool = False
    has_default: bool = False

    @property
    def resource_type(self) -> str:
        return self.type.split("@")[0]

    @property
    def body(self) -> dict[str, Any]:
        assert isinstance(self.value, dict), f"{self.kind} {self.name} has no object body"
        return self.value

    @property
    def line(self) -> int:
        return self.node.start_point[0] + 1


@dataclass
class Template:
    path: Path
    source: str
    target_scope: str
    decls: dict[str, Decl]  # params, variables, resources and modules share one namespace
    outputs: dict[str, Decl]  # outputs have their own

    def of_kind(self, kind: str) -> dict[str, Decl]:
        return {n: d for n, d in self.decls.items() if d.kind == kind}

    @property
    def params(self) -> dict[str, Decl]:
        return self.of_kind("param")

    @property
    def variables(self) -> dict[str, Decl]:
        return self.of_kind("var")

    @property
    def resources(self) -> dict[str, Decl]:
        return self.of_kind("resource")

    @property
    def modules(self) -> dict[str, Decl]:
        return self.of_kind("module")

    def resources_of_type(self, resource_type: str) -> dict[str, Decl]:
        return {n: d for n, d in self.resources.items() if d.resource_type == resource_type}

    @property
    def rel(self) -> str:
        """The path from the repository root (for a copy elsewhere: from its `infra` folder up)."""
        if self.path.is_relative_to(ROOT):
            return str(self.path.relative_to(ROOT))
        parts = self.path.parts
        start = len(parts) - 1 - parts[::-1].index("infra")
        return "/".join(parts[start:])


def _decorators(node: ts.Node) -> dict[str, tuple[Any, ...]]:
    result: dict[str, tuple[Any, ...]] = {}
    for decorator in node.children:
        if decorator.type != "decorator":
            continue
        call = convert(_named(decorator)[0])
        if isinstance(call, Call):
            result[call.name.split(".")[-1]] = call.args
        elif isinstance(call, Ref):
            result[call.name] = ()
    return result


def _body(node: ts.Node) -> tuple[Any, Any]:
    """(condition, body) of a resource or module value: an object or `if (c) {...}`."""
    if node.type == "if_statement":
        named = _named(node)
        return convert(named[0]), convert(named[-1])
    return None, convert(node)


@cache
def load(path: Path) -> Template:
    source = path.read_bytes()
    root = parser().parse(source).root_node
    decls: dict[str, Decl] = {}
    outputs: dict[str, Decl] = {}
    target_scope = "resourceGroup"
    pending: dict[str, tuple[Any, ...]] = {}
    for node in root.children:
        if node.type == "comment":
            continue
        if node.type == "decorators":
            pending = _decorators(node)
            continue
        named = _named(node)
        if node.type == "target_scope_assignment":
            target_scope = convert(named[-1])
        elif node.type == "parameter_declaration":
            name = _text(named[0])
            has_default = any(c.type == "=" for c in node.children)
            decls[name] = Decl(
                "param",
                name,
                node,
                pending,
                _text(named[1]),
                convert(named[-1]) if has_default else None,
                has_default=has_default,
            )
        elif node.type == "variable_declaration":
            name = _text(named[0])
            decls[name] = Decl("var", name, node, pending, "", convert(named[-1]))
        elif node.type == "output_declaration":
            name = _text(named[0])
            outputs[name] = Decl("output", name, node, pending, _text(named[1]), convert(named[-1]))
        elif node.type in ("resource_declaration", "module_declaration"):
            name = _text(named[0])
            condition, body = _body(named[-1])
            kind = "resource" if node.type == "resource_declaration" else "module"
            existing = any(c.type == "existing" for c in node.children)
            decls[name] = Decl(kind, name, node, pending, convert(named[1]), body, condition, existing)
        pending = {}
    return Template(path, source.decode(), target_scope, decls, outputs)


def template(rel: str) -> Template:
    return load((INFRA / rel).resolve())


# ---- following values across templates ------------------------------------------------------------


class Invalid(Exception):
    """The deployment would fail on this expression (a property or index that does not exist)."""


class Unknown(Exception):
    """The expression has no value at deployment-planning time (a runtime property, a newGuid())."""

    def __init__(self, ctx: Context, expr: Any) -> None:
        super().__init__(f"{ctx.template.rel}: {src(expr)}")
        self.ctx = ctx
        self.expr = expr


@dataclass(frozen=True)
class Context:
    """A template as instantiated: its parameters bound to the caller's expressions."""

    template: Template
    bindings: tuple[tuple[str, Any], ...] = ()
    caller: Context | None = None

    def binding(self, name: str) -> tuple[bool, Any]:
        for key, value in self.bindings:
            if key == name:
                return True, value
        return False, None

    def module(self, name: str) -> Context:
        decl = self.template.modules[name]
        child = load((self.template.path.parent / decl.type).resolve())
        params = decl.body.get("params", {})
        return Context(child, tuple(params.items()), self)


def trace(ctx: Context, expr: Any) -> tuple[Context, Any]:
    """Follow references (variables, bound parameters, module outputs) as far as they go."""
    while True:
        if isinstance(expr, Ref):
            decl = ctx.template.decls.get(expr.name)
            if decl is None:
                return ctx, expr
            if decl.kind == "var":
                expr = decl.value
                continue
            if decl.kind == "param":
                bound, value = ctx.binding(expr.name)
                if bound:
                    assert ctx.caller is not None
                    ctx, expr = ctx.caller, value
                    continue
                if decl.has_default:
                    expr = decl.value
                    continue
            return ctx, expr
        if isinstance(expr, Member):
            root, props = expr.chain()
            if isinstance(root, Ref) and root.name in ctx.template.modules and props[:1] == ("outputs",):
                child = ctx.module(root.name)
                output = child.template.outputs[props[1]]
                ctx, expr = child, output.value
                for prop in props[2:]:
                    expr = Member(expr, prop, f"{src(expr)}.{prop}")
                continue
            if isinstance(root, Ref) and root.name in ctx.template.resources and props == ("name",):
                ctx, expr = ctx, ctx.template.resources[root.name].body["name"]
                continue
            if isinstance(root, Ref) and root.name in ctx.template.variables:
                value = evaluate(ctx, root)
                for prop in props:
                    value = value[prop]
                return ctx, value
        return ctx, expr


def evaluate(ctx: Context, expr: Any) -> Any:
    """The value an expression has when the template is deployed, or Unknown."""
    ctx, expr = trace(ctx, expr)
    if expr is None or isinstance(expr, str | int | bool):
        return expr
    if isinstance(expr, dict):
        return {k: evaluate(ctx, v) for k, v in expr.items()}
    if isinstance(expr, list):
        return [evaluate(ctx, v) for v in expr]
    if isinstance(expr, Interp):
        return "".join(p if isinstance(p, str) else str(evaluate(ctx, p)) for p in expr.parts)
    if isinstance(expr, Cond):
        return evaluate(ctx, expr.yes) if evaluate(ctx, expr.test) else evaluate(ctx, expr.no)
    if isinstance(expr, Index):
        container, key = evaluate(ctx, expr.obj), evaluate(ctx, expr.index)
        if isinstance(container, dict) and isinstance(key, str):
            if key not in container:
                raise Invalid(f"{ctx.template.rel}: {src(expr)}: property {key!r} doesn't exist")
            return container[key]
        if isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(container):
                raise Invalid(f"{ctx.template.rel}: {src(expr)}: index {key} is out of range")
            return container[key]
    if isinstance(expr, Op):
        values = [evaluate(ctx, o) for o in expr.operands]
        ops = {
            "!": lambda a: not a,
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            ">": lambda a, b: a > b,
            "<": lambda a, b: a < b,
            ">=": lambda a, b: a >= b,
            "<=": lambda a, b: a <= b,
            "&&": lambda a, b: a and b,
            "||": lambda a, b: a or b,
        }
        if expr.op in ops:
            return ops[expr.op](*values)
    if isinstance(expr, Call):
        functions = {
            "empty": lambda v: not v,
            "string": lambda v: v if isinstance(v, str) else json.dumps(v, separators=(",", ":")),
            "union": lambda *vs: {k: v for d in vs for k, v in d.items()},
            "concat": lambda *vs: [x for v in vs for x in v],
            "toLower": lambda v: v.lower(),
        }
        if expr.name in functions:
            return functions[expr.name](*(evaluate(ctx, a) for a in expr.args))
    raise Unknown(ctx, expr)


def with_params(template: Template, **values: Any) -> Context:
    """The template deployed with these parameter values (the others keep their defaults)."""
    unknown = set(values) - set(template.params)
    assert not unknown, f"{template.rel} has no parameters {sorted(unknown)}"
    return Context(template, tuple(values.items()), Context(template))


def object_value(ctx: Context, expr: Any, stand_in: Callable[[str, Unknown], Any]) -> dict[str, Any]:
    """The object an expression (literal object, union(), ?:) is when deployed: conditions evaluated, so only the
    keys of the arms taken; a value with no value at planning time (a host name, a resource id) is
    ``stand_in(key, the Unknown raised)``."""
    ctx, expr = trace(ctx, expr)
    if isinstance(expr, dict):
        result: dict[str, Any] = {}
        for key, value in expr.items():
            try:
                result[key] = evaluate(ctx, value)
            except Unknown as unknown:
                result[key] = stand_in(key, unknown)
        return result
    if isinstance(expr, Call) and expr.name == "union":
        merged: dict[str, Any] = {}
        for arg in expr.args:
            merged.update(object_value(ctx, arg, stand_in))
        return merged
    if isinstance(expr, Cond):
        return object_value(ctx, expr.yes if evaluate(ctx, expr.test) else expr.no, stand_in)
    raise Unknown(ctx, expr)


def object_entries(ctx: Context, expr: Any) -> dict[str, list[tuple[Context, Any, bool]]]:
    """Every key an object expression can have, across union() and both arms of ?:, with each
    (context, value expression, always-present) it can take."""
    ctx, expr = trace(ctx, expr)
    entries: dict[str, list[tuple[Context, Any, bool]]] = {}

    def add(more: dict[str, list[tuple[Context, Any, bool]]], always: bool) -> None:
        for key, values in more.items():
            entries.setdefault(key, []).extend((c, v, a and always) for c, v, a in values)

    if isinstance(expr, dict):
        return {k: [(ctx, v, True)] for k, v in expr.items()}
    if isinstance(expr, Call) and expr.name == "union":
        for arg in expr.args:
            add(object_entries(ctx, arg), True)
        return entries
    if isinstance(expr, Cond):
        yes, no = object_entries(ctx, expr.yes), object_entries(ctx, expr.no)
        for key in set(yes) | set(no):
            both = key in yes and key in no
            add({key: yes.get(key, []) + no.get(key, [])}, both)
        return entries
    raise Unknown(ctx, expr)


def resource_of(ctx: Context, expr: Any) -> tuple[Context, Decl, tuple[str, ...]]:
    """The resource declaration an expression like `x.properties.y` (after tracing) reads from."""
    ctx, expr = trace(ctx, expr)
    if isinstance(expr, Ref):
        root, props = expr, ()
    elif isinstance(expr, Member):
        root, props = expr.chain()
    else:
        raise Unknown(ctx, expr)
    if not isinstance(root, Ref) or root.name not in ctx.template.resources:
        raise Unknown(ctx, expr)
    return ctx, ctx.template.resources[root.name], props


def param_errors(decl: Decl, value: Any) -> list[str]:
    """What ARM's parameter validation says of a value for a parameter (before deploying anything):
    its type and its @allowed, @minLength/@maxLength and @minValue/@maxValue decorators."""
    assert decl.kind == "param"
    kinds = {"string": str, "int": int, "bool": bool, "object": dict, "array": list}
    expected = kinds.get(decl.type)
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        return [f"{decl.name}: {value!r} is not of type {decl.type}"]
    errors: list[str] = []
    if "allowed" in decl.decorators:
        [allowed] = decl.decorators["allowed"]
        if value not in allowed:
            errors.append(f"{decl.name}: {value!r} is not one of the allowed values")
    if "minLength" in decl.decorators and len(value) < decl.decorators["minLength"][0]:
        errors.append(f"{decl.name}: shorter than {decl.decorators['minLength'][0]}")
    if "maxLength" in decl.decorators and len(value) > decl.decorators["maxLength"][0]:
        errors.append(f"{decl.name}: longer than {decl.decorators['maxLength'][0]}")
    if "minValue" in decl.decorators and value < decl.decorators["minValue"][0]:
        errors.append(f"{decl.name}: less than {decl.decorators['minValue'][0]}")
    if "maxValue" in decl.decorators and value > decl.decorators["maxValue"][0]:
        errors.append(f"{decl.name}: more than {decl.decorators['maxValue'][0]}")
    return errors
