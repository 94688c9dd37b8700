"""Compiling and rendering template sources in a locked-down Jinja2 sandbox.

Layers, outermost first:
- Static checks at compile time (`template_unsafe`): no `_`-prefixed attribute or item
  (`__class__`, `__globals__`, …), no `self`/`caller`/private names, no macros, includes,
  imports, blocks or recursive loops, calls only to `range()` and a short list of harmless
  methods, only declared variables (so `cycler`, `lipsum`, `namespace`, … are unknown names).
- `ImmutableSandboxedEnvironment` with `StrictUndefined`: no unsafe attributes at run time, no
  mutation of values, an undefined name or attribute is an error, never an empty string.
- An allow-list of filters; the ones that can grow text (`join`, `replace`, `indent`,
  `string`, `tojson`) are bounded before they run; `sum` adds numbers only (a sum of lists is
  quadratic); `format`, `center`, `wordwrap`, `batch`, `slice`, `random`, … are absent.
- Memory bounded before the work, never after: a value's size is the text it stands for,
  containers included (`[v] * 3000` is 3000 times `v`), measured with an early stop; `*`,
  `**`, `+`, `~`, printing a container and the growing filters refuse results over `MAX_TEXT`
  characters (or huge integers); `%` on strings is refused; `range()` gives at most
  `MAX_RANGE` numbers; the output stops at its limit.
- Time bounded while rendering: every item a loop, a whole-iterable filter (`sort`, `list`,
  `unique`, …), a size check or a `split` walks draws from one budget of `MAX_ITERATIONS` per
  render, and the clock is checked every few loop items, output chunks, calls and operators.
- Two budgets (`Budget`): a render starts on the event loop with a small one
  (`ON_LOOP_ITEMS`, `ON_LOOP_S`); a render that outgrows it stops (`MoveOffLoop`) and runs
  again from the start in a render thread (`TemplateRegistry.render`) with the full one
  (`MAX_ITERATIONS`, `RENDER_TIMEOUT_S` of that thread's CPU), so a heavy render never holds
  the loop for more than about `ON_LOOP_S`, and a runaway one stops at its budget in the thread.
Any limit hit is a 400 `template_render_limit` naming the message. Variables are passed as
data in the render context: their values are never compiled.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, meta, nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.filters import FILTERS, do_indent, do_join, do_replace, make_attrgetter
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer
from markupsafe import soft_str

from gateway.templates.errors import TemplateError, limit, unsafe

MAX_TEXT = 1_048_576  # characters: any intermediate string or list, and the default output cap
MAX_RANGE = 10_000
MAX_ITERATIONS = 100_000
MAX_INT_BITS = 4096
RENDER_TIMEOUT_S = 0.2  # CPU seconds of one render in the render thread
ON_LOOP_ITEMS = 5_000  # what a render may walk on the event loop before it moves off it
ON_LOOP_S = 0.002  # wall seconds a render may hold the event loop
_LOOK_EVERY_S = 0.001  # in the render thread: how often the GIL is let go and the CPU clock read

_PLAIN_FILTERS = (
    "abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "int", "items", "last", "length", "lower", "map",
    "reject", "rejectattr", "round", "select", "selectattr", "striptags", "title", "trim",
    "truncate", "upper", "wordcount",
)
# Filters that walk a whole iterable at once: each item is charged to the render's budget
# before (sized) or while (generators) they run.
_WALKING_FILTERS = ("dictsort", "groupby", "list", "max", "min", "reverse", "sort", "unique")
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


class MoveOffLoop(Exception):
    """A render outgrew what it may do on the event loop: run it again in the render thread."""


class Budget:
    """What one render may still spend (shared by every message of the template): items
    walked, and time, looked at every few steps (a render that does little reads no clock).

    On the event loop the time is wall time (what other requests wait for) and running out
    raises `MoveOffLoop`. In the render thread it is that thread's CPU time (a busy machine
    or the GIL cannot fail a render that does little work), running out is a 400, and every
    `_LOOK_EVERY_S` the thread lets go of the GIL for a moment, so the event loop's thread
    never waits the interpreter's 5 ms switch interval for it."""

    __slots__ = ("deadline", "items", "next_look", "on_loop", "steps")

    def __init__(self, *, on_loop: bool = False) -> None:
        self.on_loop = on_loop
        self.items = ON_LOOP_ITEMS if on_loop else MAX_ITERATIONS
        self.deadline: float | None = None
        self.next_look = 0.0
        self.steps = 0

    def spend(self, items: int) -> None:
        self.items -= items
        if self.items < 0:
            if self.on_loop:
                raise MoveOffLoop
            raise limit(f"the render walked more than {MAX_ITERATIONS} items (loops and "
                        "filters)")

    def step(self) -> None:
        """One call or operator: the clock is read every 16th."""
        self.steps += 1
        if not self.steps & 15:
            self.check_time()

    def check_time(self) -> None:
        now = time.perf_counter()
        if self.on_loop:
            if self.deadline is None:
                self.deadline = now + ON_LOOP_S
            elif now > self.deadline:
                raise MoveOffLoop
            return
        if now < self.next_look:
            return
        self.next_look = now + _LOOK_EVERY_S
        time.sleep(0)  # the GIL, for the event loop's thread if it waits for it
        cpu = time.thread_time()
        if self.deadline is None:
            self.deadline = cpu + RENDER_TIMEOUT_S
        elif cpu > self.deadline:
            raise limit(f"rendering took more than {RENDER_TIMEOUT_S * 1000:g} ms of CPU")


def _budget(context: Context) -> Budget:
    found = getattr(context, "_gw_budget", None)
    if found is None:  # a context the gateway did not make: give it a fresh budget
        found = Budget()
        context._gw_budget = found  # type: ignore[attr-defined]
    return found


def _too_long(what: str) -> TemplateError:
    return limit(f"{what} would be longer than {MAX_TEXT} characters")


_CONTAINERS = (list, tuple, dict)


def text_size(value: Any, budget: Budget, most: int = MAX_TEXT) -> int:
    """About how many characters `value` stands for as text (a container: its items, each
    time it holds them), counted until the count passes `most`; every container item looked
    at is charged to `budget`. A string costs nothing to measure."""
    kind = type(value)
    if kind is str:
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return len(value) if isinstance(value, str) else 8
    if kind is list or kind is tuple:  # most often: a flat list of short texts or numbers
        total = 2
        for item in value:
            kind = type(item)
            if kind is str:
                total += len(item) + 4
            elif kind is int or kind is float or kind is bool or item is None:
                total += 8
            else:
                break
        else:
            budget.spend(len(value))
            return total
    total = walked = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or isinstance(item, str):
            total += len(item) + 4  # quotes and a separator
            continue
        if kind is list or kind is tuple or isinstance(item, list | tuple):
            walked += len(item)
            total += 2
            extend(item)
        elif kind is dict or isinstance(item, dict):
            walked += len(item)
            total += 2 + 2 * len(item)
            extend(item.keys())
            extend(item.values())
        else:
            total += 8  # a number, a boolean, None, an undefined
            continue
        if total > most or walked > budget.items:
            break
    budget.spend(walked)
    return total


def _check_size(value: Any, budget: Budget, what: str, most: int = MAX_TEXT) -> None:
    if text_size(value, budget, most) > most:
        raise _too_long(what)


def _bounded_range(*args: Any) -> range:
    for a in args:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TemplateError("range() takes integers", code="template_render_error")
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise limit(f"range() of {len(rng)} numbers: at most {MAX_RANGE}")
    return rng


def _walk(budget: Budget, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        budget.spend(1)
        if not budget.items & 63:
            budget.check_time()
        yield item


@pass_context
def _iterate(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    return _walk(_budget(context), iterable)


def _charged(budget: Budget, value: Any) -> Any:
    """`value` for a filter that walks all of it: a sized one is charged at once, anything
    else item by item as the filter draws them."""
    if isinstance(value, str | list | tuple | dict | range):
        budget.spend(len(value))
        budget.check_time()
        return value
    return _walk(budget, value)


def _walking(name: str) -> Callable[..., Any]:
    """Jinja2's filter `name`, its input charged to the render's budget first."""
    original = FILTERS[name]
    passes = _PassArg.from_obj(original)

    @pass_context
    def walking(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        value = _charged(_budget(context), value)
        if passes is _PassArg.environment:
            return original(context.environment, value, *args, **kwargs)
        if passes is _PassArg.eval_context:
            return original(context.eval_ctx, value, *args, **kwargs)
        if passes is _PassArg.context:
            return original(context, value, *args, **kwargs)
        return original(value, *args, **kwargs)

    walking.__name__ = f"do_{name}"
    return walking


@pass_context
def _concat(context: Context, parts: Sequence[Any]) -> str:
    budget = _budget(context)
    left = MAX_TEXT
    for part in parts:
        left -= text_size(part, budget, left)
        if left < 0:
            raise _too_long("a '~' concatenation")
    return "".join([str(p) for p in parts])


@pass_context
def _join(context: Context, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    budget = _budget(context)
    items = _charged(budget, value)
    items = items if isinstance(items, list | tuple) else list(items)
    if len(str(d)) * len(items) > MAX_TEXT:
        raise _too_long("join")
    if attribute is None:  # with an attribute the items' parts are measured after
        _check_size(items, budget, "join")
    out = do_join(context.eval_ctx, items, d, attribute)
    if len(out) > MAX_TEXT:
        raise _too_long("join")
    return out


@pass_context
def _string(context: Context, value: Any) -> str:
    _check_size(value, _budget(context), "string")
    return soft_str(value)


@pass_context
def _sum(context: Context, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
         ) -> Any:
    """Jinja2's `sum`, of numbers only: a sum of lists or strings copies its whole result at
    each step (`items|sum(start=[])` is quadratic)."""
    if not _is_number(start):
        raise TemplateError("sum() adds numbers only", code="template_render_error")
    budget = _budget(context)
    values = _charged(budget, iterable)
    if attribute is not None:
        values = map(make_attrgetter(context.environment, attribute), values)
    total = start
    for value in values:
        if not _is_number(value):
            raise TemplateError("sum() adds numbers only", code="template_render_error")
        total += value
    return total


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not (
        isinstance(value, int) and value.bit_length() > MAX_INT_BITS)


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


@pass_context
def _tojson(context: Context, value: Any, indent: int | None = None) -> str:
    """JSON as a model reads it (unlike Jinja2's HTML-safe `tojson`, no `\\u003c` escapes)."""
    if indent is not None and (not isinstance(indent, int) or not 0 <= indent <= 8):
        raise TemplateError("tojson indent must be 0 to 8", code="template_render_error")
    _check_size(value, _budget(context), "tojson")
    out = json.dumps(value, ensure_ascii=False, indent=indent)
    if len(out) > MAX_TEXT:
        raise _too_long("tojson")
    return out


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Each `{{ }}` value before it becomes text: a container is measured first."""
    if value is None:
        return ""
    if isinstance(value, _CONTAINERS):
        _check_size(value, _budget(context), "a printed value")
    return value


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
        budget = _budget(context)
        budget.step()
        if operator == "*":
            seq, times = ((left, right) if isinstance(left, str | list | tuple)
                          else (right, left))
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                times = max(times, 0)
                if times and text_size(seq, budget, MAX_TEXT // times) * times > MAX_TEXT:
                    raise _too_long("a repeated text or list")
            elif (isinstance(left, int) and isinstance(right, int)
                  and left.bit_length() + right.bit_length() > MAX_INT_BITS):
                raise limit("an integer would be too large")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 \
                    and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
                raise limit("an integer power would be too large")
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                left_size = text_size(left, budget)
                if left_size + text_size(right, budget, MAX_TEXT - left_size) > MAX_TEXT:
                    raise _too_long("a '+' concatenation")
        elif operator == "%" and isinstance(left, str):
            raise unsafe("'%' formatting of strings is not allowed: use {{ }} or '~'")
        return self.binop_table[operator](left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        kwargs.pop("_loop_vars", None)  # Jinja2's own bookkeeping, not arguments
        kwargs.pop("_block_vars", None)
        budget = _budget(__context)
        budget.step()
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
                items = list(_charged(budget, args[0]))
                if len(owner) * len(items) > MAX_TEXT:
                    raise _too_long("join")
                _check_size(items, budget, "join")
                args = (items, *args[1:])
        out = super().call(__context, __obj, *args, **kwargs)
        if isinstance(out, list):  # split, rsplit, splitlines: as many items as a loop
            budget.spend(len(out))
        return out


def make_environment() -> GatewaySandbox:
    env = GatewaySandbox(undefined=StrictUndefined, autoescape=False, trim_blocks=True,
                         lstrip_blocks=True, keep_trailing_newline=True, auto_reload=False,
                         cache_size=0, finalize=_finalize)
    env.globals.clear()
    env.globals["range"] = _bounded_range
    env.filters = {name: FILTERS[name] for name in _PLAIN_FILTERS}
    env.filters.update({name: _walking(name) for name in _WALKING_FILTERS})
    env.filters.update({"join": _join, "replace": _replace, "indent": _indent,
                        "tojson": _tojson, "string": _string, "sum": _sum, _ITER: _iterate,
                        _CONCAT: _concat})
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
           max_chars: int = MAX_TEXT, on_loop: bool = False) -> list[dict[str, str]]:
    """Render every message; raise `TemplateError` (limit, unsafe or render error), or
    `MoveOffLoop` (`on_loop`: the small budget ran out)."""
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
                budget = Budget(on_loop=on_loop)
                context._gw_budget = budget  # type: ignore[attr-defined]
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
            except MoveOffLoop:
                raise
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
