"""Compiling and rendering template sources in a locked-down Jinja2 sandbox.

Layers, outermost first:
- Static checks at compile time (`template_unsafe`): no `_`-prefixed attribute or item
  (`__class__`, `__globals__`, …), no `self`/`caller`/private names, no macros, includes,
  imports, blocks or recursive loops, calls only to `range()` and a short list of harmless
  methods, only declared variables (so `cycler`, `lipsum`, `namespace`, … are unknown names).
- `ImmutableSandboxedEnvironment` with `StrictUndefined`: no unsafe attributes at run time, no
  mutation of values, an undefined name or attribute is an error, never an empty string.
- An allow-list of filters; the ones that can grow text (`join`, `replace`, `indent`) are
  bounded before they run; `format`, `center`, `wordwrap`, `batch`, `slice`, `random`, … are
  absent.
- Bounded run time and size: `*`, `**`, `+` and `~` refuse results over `MAX_TEXT` characters
  (or huge integers), `%` on strings is refused, `range()` gives at most `MAX_RANGE` numbers,
  every `for` loop draws from one budget of `MAX_ITERATIONS` per render, and the render stops
  at `RENDER_TIMEOUT_S` (checked at loop iterations and output chunks) or when the output
  passes its limit (`template_render_limit`).
Variables are passed as data in the render context: their values are never compiled.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, meta, nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.filters import FILTERS, do_indent, do_join, do_replace
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from gateway.templates.errors import TemplateError, limit, unsafe

MAX_TEXT = 1_048_576  # characters: any intermediate string or list, and the default output cap
MAX_RANGE = 10_000
MAX_ITERATIONS = 100_000
MAX_INT_BITS = 4096
RENDER_TIMEOUT_S = 0.2  # CPU seconds of one render, checked at loop iterations and chunks

_PLAIN_FILTERS = (
    "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "groupby", "int", "items", "last", "length", "list",
    "lower", "map", "max", "min", "reject", "rejectattr", "reverse", "round", "select",
    "selectattr", "sort", "string", "striptags", "sum", "title", "trim", "truncate", "unique",
    "upper", "wordcount",
)
# Filters whose arguments name attributes: a `_`-prefixed one is refused at compile time.
_ATTR_FILTERS = frozenset({"attr", "map", "select", "selectattr", "reject", "rejectattr",
                           "groupby", "sort", "sum", "unique", "min", "max", "dictsort", "join"})
# The only methods a template may call, by the type of the object they belong to.
_SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (str, frozenset({
        "lower", "upper", "strip", "lstrip", "rstrip", "title", "capitalize", "casefold",
        "swapcase", "startswith", "endswith", "split", "rsplit", "splitlines", "count", "find",
        "rfind", "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric",
        "isdecimal", "replace", "join", "removeprefix", "removesuffix"})),
    (dict, frozenset({"items", "keys", "values", "get"})),
    (list, frozenset({"index", "count"})),
    (tuple, frozenset({"index", "count"})),
    (LoopContext, frozenset({"cycle", "changed"})),
)
_METHOD_NAMES = frozenset().union(*(names for _, names in _SAFE_METHODS))
_FORBIDDEN_NODES = (nodes.Macro, nodes.CallBlock, nodes.Include, nodes.Import, nodes.FromImport,
                    nodes.Extends, nodes.Block, nodes.Scope, nodes.EvalContextModifier,
                    nodes.ExprStmt, nodes.NSRef)
_FORBIDDEN_NAMES = frozenset({"self", "caller", "varargs", "kwargs", "loop_context"})
_ITER = "_gw_iter"
_DICT_ATTRS = frozenset(dir(dict))
_LOOP_ATTRS = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length",
                         "depth", "depth0", "previtem", "nextitem"})
_CONCAT = "_gw_concat"


class Budget:
    """What one render may still spend (shared by every message of the template).

    Time is the rendering thread's CPU time (`time.thread_time`), so a busy machine or a
    descheduled process cannot fail a render that does little work; the clock is read only
    by renders that loop or emit many chunks, and from the first such read on."""

    __slots__ = ("deadline", "iterations")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.iterations = MAX_ITERATIONS

    def check_time(self) -> None:
        now = time.thread_time()
        if self.deadline is None:
            self.deadline = now + RENDER_TIMEOUT_S
        elif now > self.deadline:
            raise limit(f"rendering took more than {RENDER_TIMEOUT_S * 1000:g} ms of CPU")


def _budget(context: Context) -> Budget:
    found = getattr(context, "_gw_budget", None)
    if found is None:  # a context the gateway did not make: give it a fresh budget
        found = Budget()
        context._gw_budget = found  # type: ignore[attr-defined]
    return found


def _too_long(what: str) -> TemplateError:
    return limit(f"{what} would be longer than {MAX_TEXT} characters")


def _bounded_range(*args: Any) -> range:
    for a in args:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TemplateError("range() takes integers", code="template_render_error")
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise limit(f"range() of {len(rng)} numbers: at most {MAX_RANGE}")
    return rng


@pass_context
def _iterate(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget(context)
    for item in iterable:
        budget.iterations -= 1
        if budget.iterations < 0:
            raise limit(f"loops ran more than {MAX_ITERATIONS} times")
        if not budget.iterations & 63:
            budget.check_time()
        yield item


def _concat(parts: Sequence[Any]) -> str:
    texts = [str(p) for p in parts]
    if sum(map(len, texts)) > MAX_TEXT:
        raise _too_long("a '~' concatenation")
    return "".join(texts)


@pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = value if isinstance(value, list | tuple) else list(value)
    if len(str(d)) * len(items) > MAX_TEXT:
        raise _too_long("join")
    out = do_join(eval_ctx, items, d, attribute)
    if len(out) > MAX_TEXT:
        raise _too_long("join")
    return out


def _check_replace(s: str, old: str, new: str) -> None:
    hits = s.count(old) if old else len(s) + 1
    if len(s) + hits * (len(new) - len(old)) > MAX_TEXT:
        raise _too_long("replace")


@pass_eval_context
def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_replace(str(s), str(old), str(new))
    return do_replace(eval_ctx, s, old, new, count)


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    pad = len(width) if isinstance(width, str) else width
    if not isinstance(pad, int) or pad < 0 or pad > 1000:
        raise TemplateError("indent width must be 0 to 1000", code="template_render_error")
    if len(str(s)) + pad * (str(s).count("\n") + 1) > MAX_TEXT:
        raise _too_long("indent")
    return do_indent(s, width, first, blank)


def _tojson(value: Any, indent: int | None = None) -> str:
    """JSON as a model reads it (unlike Jinja2's HTML-safe `tojson`, no `\\u003c` escapes)."""
    if indent is not None and (not isinstance(indent, int) or not 0 <= indent <= 8):
        raise TemplateError("tojson indent must be 0 to 8", code="template_render_error")
    out = json.dumps(value, ensure_ascii=False, indent=indent)
    if len(out) > MAX_TEXT:
        raise _too_long("tojson")
    return out


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class GatewaySandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `value.key` on JSON data: the item, without the AttributeError round trip of the
        # generic path (same result: a dict's attributes are exactly `dir(dict)`).
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRS:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if kind is LoopContext and attribute in _LOOP_ATTRS:  # `loop.index` and friends
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            seq, times = ((left, right) if isinstance(left, str | list | tuple)
                          else (right, left))
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                if len(seq) * max(times, 0) > MAX_TEXT:
                    raise _too_long("a repeated text or list")
            elif (isinstance(left, int) and isinstance(right, int)
                  and left.bit_length() + right.bit_length() > MAX_INT_BITS):
                raise limit("an integer would be too large")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 \
                    and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
                raise limit("an integer power would be too large")
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple) \
                    and len(left) + len(right) > MAX_TEXT:
                raise _too_long("a '+' concatenation")
        elif operator == "%" and isinstance(left, str):
            raise unsafe("'%' formatting of strings is not allowed: use {{ }} or '~'")
        return self.binop_table[operator](left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        kwargs.pop("_loop_vars", None)  # Jinja2's own bookkeeping, not arguments
        kwargs.pop("_block_vars", None)
        if __obj is _bounded_range:
            return _bounded_range(*args, **kwargs)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", None)
        if owner is None or not any(isinstance(owner, kind) and name in names
                                    for kind, names in _SAFE_METHODS):
            raise SecurityError(f"calling {name or type(__obj).__name__!r} is not allowed")
        if isinstance(owner, str):
            if name == "replace" and len(args) >= 2:
                _check_replace(owner, str(args[0]), str(args[1]))
            elif name == "join" and args:
                items = list(args[0])
                if len(owner) * len(items) > MAX_TEXT:
                    raise _too_long("join")
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)


def make_environment() -> GatewaySandbox:
    env = GatewaySandbox(undefined=StrictUndefined, autoescape=False, trim_blocks=True,
                         lstrip_blocks=True, keep_trailing_newline=True, auto_reload=False,
                         cache_size=0, finalize=_finalize)
    env.globals.clear()
    env.globals["range"] = _bounded_range
    env.filters = {name: FILTERS[name] for name in _PLAIN_FILTERS}
    env.filters.update({"join": _join, "replace": _replace, "indent": _indent,
                        "tojson": _tojson, _ITER: _iterate, _CONCAT: _concat})
    return env


class _Guard(NodeTransformer):
    """Route every loop through the iteration budget and every `~` through the size bound."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT, [], [], None,
                            None, lineno=node.lineno)


def _static_problems(env: GatewaySandbox, ast: nodes.Template, declared: frozenset[str]
                     ) -> TemplateError | None:
    for node in ast.find_all(_FORBIDDEN_NODES):
        what = type(node).__name__.lower()
        return unsafe(f"line {node.lineno}: '{what}' is not allowed in a template")
    for node in ast.find_all(nodes.For):
        if node.recursive:
            return unsafe(f"line {node.lineno}: recursive loops are not allowed")
    for node in ast.find_all(nodes.Getattr):
        if node.attr.startswith("_"):
            return unsafe(f"line {node.lineno}: access to the attribute {node.attr!r} is not "
                          "allowed")
    for node in ast.find_all(nodes.Getitem):
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) \
                and node.arg.value.startswith("_"):
            return unsafe(f"line {node.lineno}: access to the item {node.arg.value!r} is not "
                          "allowed")
    for node in ast.find_all(nodes.Name):
        if node.name in _FORBIDDEN_NAMES or node.name.startswith("_"):
            return unsafe(f"line {node.lineno}: the name {node.name!r} is not allowed")
    for node in ast.find_all(nodes.Call):
        callee = node.node
        if not ((isinstance(callee, nodes.Name) and callee.name == "range")
                or (isinstance(callee, nodes.Getattr) and callee.attr in _METHOD_NAMES)):
            return unsafe(f"line {node.lineno}: only range() and the methods "
                          + ", ".join(sorted(_METHOD_NAMES)) + " may be called")
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        kind = "filter" if isinstance(node, nodes.Filter) else "test"
        table = env.filters if kind == "filter" else env.tests
        if node.name not in table or node.name.startswith("_"):
            allowed = ", ".join(sorted(n for n in table if not n.startswith("_")))
            return unsafe(f"line {node.lineno}: the {kind} {node.name!r} is not allowed "
                          f"(allowed: {allowed})")
        if kind == "filter" and node.name in _ATTR_FILTERS:
            for arg in [*node.args, *(kw.value for kw in node.kwargs)]:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str) \
                        and arg.value.startswith("_"):
                    return unsafe(f"line {node.lineno}: the attribute {arg.value!r} is not "
                                  "allowed")
    undeclared = sorted(meta.find_undeclared_variables(ast) - declared)
    if undeclared:
        return TemplateError(f"uses the undeclared variable {undeclared[0]!r} (declare it "
                             "under 'variables')", code="template_invalid")
    return None


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    role: str
    constant: str | None  # the content when it holds no Jinja2 syntax at all
    template: Any  # jinja2.Template, or None when constant
    where: str  # `messages[i].content`, for errors


def compile_message(env: GatewaySandbox, role: str, source: str, where: str,
                    declared: frozenset[str]) -> CompiledMessage:
    """Compile one message content; raise `TemplateError` with `param` = `where`."""
    if "{" not in source:
        return CompiledMessage(role, source, None, where)
    try:
        return _compile(env, role, source, where, declared)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: does not compile: line {exc.lineno}: {exc.message}",
                            code="template_invalid", param=where) from None
    except (RecursionError, MemoryError, SyntaxError):  # the parser's or Python's own limits
        raise TemplateError(f"{where}: does not compile: nested too deeply",
                            code="template_invalid", param=where) from None


def _compile(env: GatewaySandbox, role: str, source: str, where: str,
             declared: frozenset[str]) -> CompiledMessage:
    ast = env.parse(source)
    problem = _static_problems(env, ast, declared)
    if problem is not None:
        problem.message = f"{where}: {problem.message}"
        problem.param = where
        raise problem
    ast = _Guard().visit(ast)
    return CompiledMessage(role, None, env.from_string(ast), where)


def _line(template: Any, exc: BaseException) -> str:
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<template>":
            return f" (line {template.get_corresponding_lineno(lineno)})"
    return ""


def _render_error(message: CompiledMessage, exc: Exception) -> TemplateError:
    where = message.where + _line(message.template, exc)
    if isinstance(exc, TemplateError):
        exc.message = f"{where}: {exc.message}"
        out = exc
    elif isinstance(exc, SecurityError):
        out = unsafe(f"{where}: {exc}")
    elif isinstance(exc, RecursionError | MemoryError):
        out = limit(f"{where}: rendering ran out of room ({type(exc).__name__})")
    else:
        # Messages of these name types and attributes only; others may quote values.
        detail = str(exc) if isinstance(exc, UndefinedError | TypeError | ZeroDivisionError) \
            else type(exc).__name__
        out = TemplateError(f"{where}: rendering failed: {detail}",
                            code="template_render_error")
    out.param = message.where
    return out


def render(compiled: Sequence[CompiledMessage], variables: Mapping[str, Any], *,
           max_chars: int = MAX_TEXT) -> list[dict[str, str]]:
    """Render every message; raise `TemplateError` (limit, unsafe or render error)."""
    context: Context | None = None
    remaining = max_chars
    out = []
    for message in compiled:
        if message.template is None:
            text = message.constant
            assert text is not None
        else:
            template = message.template
            if context is None:
                # One context for every message (none has blocks or a name): the variables
                # are its read-only parent scope; what `set` wrote is cleared in between.
                context = Context(template.environment,
                                  {**template.environment.globals, **variables}, None, {},
                                  globals=template.globals)
                budget = context._gw_budget = Budget()  # type: ignore[attr-defined]
            else:
                context.vars.clear()
                context.exported_vars.clear()
            parts: list[str] = []
            append = parts.append
            size = count = 0
            try:
                for chunk in template.root_render_func(context):
                    size += len(chunk)
                    if size > remaining:
                        raise limit(f"the rendered template is longer than {max_chars} "
                                    "characters")
                    append(chunk)
                    count += 1
                    if not count & 15:
                        budget.check_time()
            # Anything a template raises is a fault of that template or its values (a 400),
            # never of the gateway; the message names the kind, not the stack.
            except Exception as exc:
                raise _render_error(message, exc) from None
            text = "".join(parts)
        remaining -= len(text)
        if remaining < 0:
            raise limit(f"the rendered template is longer than {max_chars} characters")
        out.append({"role": message.role, "content": text})
    return out
