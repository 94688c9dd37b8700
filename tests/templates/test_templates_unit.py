"""Templates in-process: the shipped prompts, the sandbox, variable checks, the canary split.

Real Jinja2, real files from `prompts/`; no mocks. The HTTP paths are in
test_templates_api.py (admin) and test_templates_v1.py (the openai SDK).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError
from gateway.templates.errors import TemplateError
from gateway.templates.files import load_prompt_files
from gateway.templates.registry import Label
from gateway.templates.sandbox import MAX_ITERATIONS, make_environment
from gateway.templates.spec import canonical, parse_spec, spec_problems, to_yaml
from gateway.templates.versions import TemplateVersion, check_spec

REPO = Path(__file__).resolve().parents[2]
ENV = make_environment()

# Example variables for every shipped prompt, and a phrase each rendering must contain.
SHIPPED_EXAMPLES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "support-triage": (
        {"ticket": "I was charged twice for my March invoice, please fix!",
         "customer_name": "Dana", "tier": "enterprise", "product": "Acme Cloud"},
        ["Acme Cloud", "charged twice", "at least \"high\"", "addressed to Dana",
         '"billing"']),
    "summarize": (
        {"text": "The quarterly report shows revenue up 12% and costs flat.",
         "style": "tldr", "max_words": 30, "focus": ["revenue", "costs"]},
        ["revenue up 12%", "at most 30 words", "single sentence", "revenue, costs"]),
    "extract-fields": (
        {"document": "Invoice INV-42 from ACME GmbH. Total: 1,200.00 EUR. Due 2026-12-01.",
         "document_kind": "invoice",
         "fields": [{"name": "invoice_number"},
                    {"name": "total", "type": "number", "description": "amount due"},
                    {"name": "due_date", "type": "date"}]},
        ['- "total" (number): amount due', '["invoice_number", "total", "due_date"]',
         "INV-42", "never guess"]),
}


def version_of(doc: dict[str, Any], number: int = 1) -> TemplateVersion:
    spec = parse_spec(doc)
    canon = canonical(spec)
    check_spec(ENV, spec, canon)
    return TemplateVersion(canon, version=number, content_hash="h", source="api",
                           author_key_id=None, created_at=None)


def one(content: str, variables: dict[str, Any] | None = None) -> TemplateVersion:
    return version_of({"name": "t", "variables": variables or {},
                       "messages": [{"role": "user", "content": content}]})


def render_text(tpl: TemplateVersion, variables: dict[str, Any] | None = None) -> str:
    return tpl.render(ENV, variables or {})[0]["content"]


# --- the shipped prompts ---------------------------------------------------------------------

def test_every_shipped_prompt_renders_with_example_variables() -> None:
    files = load_prompt_files(REPO / "prompts", ENV)
    assert {f.doc["name"] for f in files} == set(SHIPPED_EXAMPLES)
    for f in files:
        variables, phrases = SHIPPED_EXAMPLES[f.doc["name"]]
        tpl = TemplateVersion(f.doc, version=1, content_hash=f.content_hash, source="file",
                              author_key_id=None, created_at=None)
        messages = tpl.render(ENV, variables)
        text = "\n".join(m["content"] for m in messages)
        assert [m["role"] for m in messages] == ["system", "user"]
        for phrase in phrases:
            assert phrase.lower() in text.lower(), (f.doc["name"], phrase)
        assert "{{" not in text and "{%" not in text
        assert f.doc["model"] == "demo"
        # Only the required variables: defaults fill the rest.
        required = {n: variables[n] for n, v in f.doc["variables"].items() if v.get("required")}
        assert tpl.render(ENV, required)


def test_shipped_support_triage_without_optional_name_keeps_layout() -> None:
    (tpl,) = [f for f in load_prompt_files(REPO / "prompts", ENV)
              if f.doc["name"] == "support-triage"]
    version = TemplateVersion(tpl.doc, version=1, content_hash="h", source="file",
                              author_key_id=None, created_at=None)
    system = version.render(ENV, {"ticket": "help"})[0]["content"]
    assert '"reply": a short, friendly first reply\n}' in system
    assert "enterprise" not in system and "paying customer" not in system


# --- sandbox escapes and bombs in a template source ------------------------------------------

SOURCE_PAYLOADS = [
    ("{{ ''.__class__.__mro__ }}", "template_unsafe"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "template_unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "template_unsafe"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "template_unsafe"),
    ("{{ joiner.__init__.__globals__ }}", "template_unsafe"),
    ("{{ lipsum.__globals__['os'] }}", "template_unsafe"),
    ("{{ namespace.__init__ }}", "template_unsafe"),
    ("{{ self._TemplateReference__context }}", "template_unsafe"),
    ("{{ self }}", "template_unsafe"),
    ("{{ config.__class__ }}", "template_unsafe"),
    ("{{ request['__class__'] }}", "template_unsafe"),
    ("{{ x.__len__() }}", "template_unsafe"),
    ("{{ x|attr('__class__') }}", "template_unsafe"),
    ("{{ x|attr('__cla' ~ 'ss__') }}", "template_unsafe"),
    ("{{ x[('__cla' ~ 'ss__')] }}", "template_unsafe"),
    ("{{ x.format(1) }}", "template_unsafe"),
    ("{{ '{0.__class__}'.format(x) }}", "template_unsafe"),
    ("{{ '%s' % x }}", "template_unsafe"),
    ("{{ x|format(1) }}", "template_unsafe"),
    ("{{ x|center(1000000000) }}", "template_unsafe"),
    ("{{ x|wordwrap(1) }}", "template_unsafe"),
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "template_unsafe"),
    ("{% include '/etc/passwd' %}", "template_unsafe"),
    ("{% import 'os' as os %}", "template_unsafe"),
    ("{% extends 'base' %}", "template_unsafe"),
    ("{% for i in x recursive %}{{ loop(i) }}{% endfor %}", "template_unsafe"),
    ("{{ range.__call__(3) }}", "template_unsafe"),
    ("{{ x.upper.__self__ }}", "template_unsafe"),
    ("{{ undeclared }}", "template_invalid"),
    ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "template_invalid"),
    ("{% if x %}" * 2000 + "{% endif %}" * 2000, "template_invalid"),
    ("{% for i in x %}" * 40 + "{% endfor %}" * 40, "template_invalid"),
    ("{{ x }", "template_invalid"),
    ("{% for i in range(10**9) %}{% endfor %}", "template_render_limit"),
    ("{{ range(10**9)|length }}", "template_render_limit"),
    ("{{ 'a' * 10**9 }}", "template_render_limit"),
    ("{{ ['a'] * 10**9 }}", "template_render_limit"),
    ("{{ 2 ** 100000000 }}", "template_render_limit"),
    ("{{ 10 ** 10 ** 10 ** 10 ** 10 }}", "template_render_limit"),
    ("{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
     "template_render_limit"),
    ("{% set s = 'a' * 600000 %}{{ s ~ s }}", "template_render_limit"),
    ("{% set s = 'a' * 600000 %}{{ s + s }}", "template_render_limit"),
    ("{{ ('a' * 1000)|replace('a', 'b' * 2000) }}", "template_render_limit"),
    ("{{ ('a' * 1000).replace('', 'b' * 2000) }}", "template_render_limit"),
    ("{{ range(10000)|join('x' * 1000) }}", "template_render_limit"),
    ("{{ ('a\n' * 10000)|indent(1000) }}", "template_render_limit"),
]


@pytest.mark.parametrize("source,code", SOURCE_PAYLOADS)
def test_source_payloads_are_refused_at_create(source: str, code: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError) as err:
        one(source, {"x": {"type": "string", "default": "hi"}})
    assert err.value.code == code, err.value.message
    assert err.value.status_code == 400
    assert err.value.param == "messages[0].content"
    assert "Traceback" not in err.value.message
    assert time.monotonic() - started < 10


# --- bombs that depend on variable values: refused at render ---------------------------------

VALUE_BOMBS = [
    ("{% for i in range(n) %}.{% endfor %}", {"n": 10**9}),
    ("{{ 'ab' * n }}", {"n": 10**9}),
    ("{{ n ** n }}", {"n": 10**6}),
    ("{% for a in items %}{% for b in items %}{% endfor %}{% endfor %}",
     {"items": list(range(5000))}),
    ("{% for a in items %}{{ s }}{% endfor %}", {"items": list(range(5000)), "s": "x" * 1000}),
]


@pytest.mark.parametrize("source,values", VALUE_BOMBS)
def test_value_driven_bombs_stop_at_render(source: str, values: dict[str, Any]) -> None:
    tpl = one(source, {"n": {"type": "integer", "default": 1},
                       "items": {"type": "array", "default": []},
                       "s": {"type": "string", "default": ""}})
    started = time.monotonic()
    with pytest.raises(TemplateError) as err:
        tpl.render(ENV, values)
    assert err.value.code == "template_render_limit", err.value.message
    assert time.monotonic() - started < 10


def test_iteration_budget_is_shared_by_every_loop_of_a_render() -> None:
    per_loop = MAX_ITERATIONS // 2 + 1
    tpl = one("{% for a in items %}{% endfor %}{% for a in items %}{% endfor %}",
              {"items": {"type": "array"}})
    with pytest.raises(TemplateError) as err:
        tpl.render(ENV, {"items": list(range(per_loop))})
    assert err.value.code == "template_render_limit"
    assert render_text(tpl, {"items": list(range(per_loop - 2))}) == ""


def test_output_size_limit() -> None:
    tpl = version_of({"name": "t", "variables": {"s": {"type": "string"}},
                      "messages": [{"role": "user", "content": "{{ s }}"}] * 3})
    assert tpl.render(ENV, {"s": "x" * 1000}, max_chars=3000)
    with pytest.raises(TemplateError) as err:
        tpl.render(ENV, {"s": "x" * 1000}, max_chars=2999)
    assert err.value.code == "template_render_limit"


# --- bounded while rendering, not after: memory, time, the event loop ------------------------

BIG = "x" * 1_000_000
TYPED = {"v": {"type": "string", "default": ""}, "items": {"type": "array", "default": []},
         "n": {"type": "integer", "default": 1}}
# (source, values): each would build far more than MAX_TEXT characters, or run for seconds
WORK_BOMBS = [
    ("{{ [v] * 3000 }}", {"v": "x" * 100_000}),
    ("{{ ([v] * 11)|length }}", {"v": "x" * 100_000}),
    ("{{ [[v] * 4] * 40 }}", {"v": "x" * 100_000}),
    ("{{ [v, v, v, v, v, v, v, v, v, v, v] }}", {"v": BIG}),
    ("{{ [v, v, v, v, v, v, v, v, v, v, v]|tojson }}", {"v": BIG}),
    ("{{ [v, v, v, v, v, v, v, v, v, v, v]|string }}", {"v": BIG}),
    ("{{ [v, v, v, v, v, v, v, v, v, v, v]|join }}", {"v": BIG}),
    ("{{ ''.join([v, v, v, v, v, v, v, v, v, v, v]) }}", {"v": BIG}),
    ("{{ 'x' ~ [v, v, v, v, v, v, v, v, v, v, v] }}", {"v": BIG}),
    ("{{ [v] * 1 + [v] * 1 }}", {"v": "x" * 600_000}),
    ("{{ items * n }}", {"items": ["x" * 100_000], "n": 100}),
    ("{{ (items|sort)|length }}", {"items": list(range(150_000))}),
    ("{{ (items|unique|list)|length }}", {"items": list(range(150_000))}),
    ("{{ items|max }}", {"items": list(range(150_000))}),
    ("{{ v.split()|length }}", {"v": "a " * 150_000}),
    ("{% for i in items %}{% if (v ~ i)|length %}{% endif %}{% endfor %}",
     {"v": "x" * 200_000, "items": list(range(60_000))}),
]


@pytest.mark.parametrize("source,values", WORK_BOMBS)
def test_work_bombs_stop_before_the_work(source: str, values: dict[str, Any]) -> None:
    import tracemalloc

    tpl = one(source, TYPED)
    tracemalloc.start()
    started = time.thread_time()
    try:
        with pytest.raises(TemplateError) as err:
            tpl.render(ENV, values)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code == "template_render_limit", err.value.message
    assert err.value.param == "messages[0].content"
    assert time.thread_time() - started < 0.5  # the CPU budget is 0.2 s
    assert peak < 8 * 1024 * 1024, peak  # nothing near the size asked for was built


@pytest.mark.parametrize("source", ["{{ items|sum(start=[]) }}", "{{ items|sum }}",
                                    "{{ words|sum(start='') }}"])
def test_sum_adds_numbers_only(source: str) -> None:
    tpl = one(source, {"items": {"type": "array", "default": []},
                       "words": {"type": "array", "default": []}})
    with pytest.raises(TemplateError) as err:
        tpl.render(ENV, {"items": [[i] for i in range(20_000)], "words": ["a", "b"]})
    assert err.value.message.endswith("sum() adds numbers only")
    assert render_text(one("{{ items|sum }} {{ items|sum(start=0.5) }}",
                           {"items": {"type": "array"}}), {"items": [1, 2, 3.5]}) == "6.5 7.0"


def test_walking_filters_still_work_within_the_budget() -> None:
    tpl = one("{{ items|sort|first }} {{ items|unique|list|length }} {{ items|max }} "
              "{{ items|reverse|first }} {{ words|join(',') }} {{ words|map('upper')|join }} "
              "{{ (v.split(','))|length }} {{ [v] * 2 }} {{ items|dictsort if false }}",
              {"items": {"type": "array"}, "words": {"type": "array"},
               "v": {"type": "string"}})
    assert render_text(tpl, {"items": [3, 1, 2, 3], "words": ["a", "b"], "v": "p,q,r"}) == \
        "1 3 3 3 a,b AB 3 ['p,q,r', 'p,q,r'] "


def test_a_render_that_outgrows_the_event_loop_moves_off_it() -> None:
    from gateway.templates.sandbox import ON_LOOP_ITEMS, MoveOffLoop

    tpl = one("{% for i in items %}{% endfor %}done", {"items": {"type": "array"}})
    assert tpl.render(ENV, {"items": list(range(ON_LOOP_ITEMS - 1))}, on_loop=True)
    with pytest.raises(MoveOffLoop):
        tpl.render(ENV, {"items": list(range(ON_LOOP_ITEMS + 1))}, on_loop=True)
    slow = one("{% for i in items %}{% if (v ~ i)|length %}{% endif %}{% endfor %}done",
               {"items": {"type": "array"}, "v": {"type": "string"}})
    started = time.perf_counter()
    with pytest.raises(MoveOffLoop):
        slow.render(ENV, {"items": list(range(4000)), "v": "x" * 200_000}, on_loop=True)
    assert time.perf_counter() - started < 0.05  # ON_LOOP_S is 2 ms
    assert render_text(slow, {"items": list(range(400)), "v": "x" * 200_000}) == "done"


async def test_the_registry_renders_a_heavy_template_off_the_event_loop() -> None:
    import asyncio
    import threading

    from gateway.templates.registry import TemplateRegistry

    registry = TemplateRegistry(None)  # type: ignore[arg-type]  # no store: render only
    tpl = one("{% for i in items %}{{ i if i % 7000 == 0 }}{% endfor %}",
              {"items": {"type": "array"}})
    loop_thread = threading.get_ident()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    beat = asyncio.create_task(ticker())
    try:
        small = await registry.render(tpl, {"items": list(range(10))})
        big = await registry.render(tpl, {"items": list(range(50_000))})
    finally:
        beat.cancel()
        await registry.stop()
    assert small[0]["content"] == "0" and big[0]["content"].startswith("0700014000")
    assert threading.get_ident() == loop_thread
    assert ticks > 0  # the loop kept running while the big one rendered


# --- variables are data ----------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}", "{% for i in "
    "range(10**9) %}x{% endfor %}", "{{ 'a' * 10**9 }}", "{% include 'x' %}", "{#", "}}{{",
])
def test_variable_values_are_never_rendered_as_templates(payload: str) -> None:
    tpl = one("<{{ v }}>", {"v": {"type": "string"}})
    assert render_text(tpl, {"v": payload}) == f"<{payload}>"
    nested = one("<{{ o.k }}|{{ a[0] }}|{{ o|tojson }}>",
                 {"o": {"type": "object"}, "a": {"type": "array"}})
    out = render_text(nested, {"o": {"k": payload}, "a": [payload]})
    assert out.startswith(f"<{payload}|{payload}|")


def test_dict_keys_of_values_do_not_reach_python_attributes() -> None:
    tpl = one("{{ o['x'] }}-{{ o.items()|list|length }}", {"o": {"type": "object"}})
    assert render_text(tpl, {"o": {"x": 1, "__class__": "data"}}) == "1-2"
    dyn = one("{{ o[k] }}", {"o": {"type": "object"}, "k": {"type": "string"}})
    assert render_text(dyn, {"o": {"__class__": "plain data"}, "k": "__class__"}) == "plain data"
    with pytest.raises(TemplateError) as err:
        render_text(dyn, {"o": {}, "k": "__class__"})
    assert err.value.code == "template_unsafe"


VARS = {"name": {"type": "string", "max_length": 5},
        "tier": {"type": "string", "enum": ["free", "pro"], "default": "free"},
        "n": {"type": "integer", "required": False},
        "ratio": {"type": "number", "default": 0.5},
        "flag": {"type": "boolean", "default": False},
        "tags": {"type": "array", "max_length": 2, "default": []},
        "meta": {"type": "object", "default": {}}}


@pytest.mark.parametrize("given,code,param", [
    ({}, "template_variable_missing", "variables.name"),
    ({"name": None}, "template_variable_missing", "variables.name"),
    ({"name": "a", "nope": 1}, "template_variable_unknown", "variables.nope"),
    ({"name": "a", "__class__": 1}, "template_variable_unknown", "variables.__class__"),
    ({"name": 5}, "template_variable_invalid", "variables.name"),
    ({"name": "toolong"}, "template_variable_invalid", "variables.name"),
    ({"name": "a", "tier": "gold"}, "template_variable_invalid", "variables.tier"),
    ({"name": "a", "n": True}, "template_variable_invalid", "variables.n"),
    ({"name": "a", "n": 1.5}, "template_variable_invalid", "variables.n"),
    ({"name": "a", "n": "1"}, "template_variable_invalid", "variables.n"),
    ({"name": "a", "ratio": "x"}, "template_variable_invalid", "variables.ratio"),
    ({"name": "a", "flag": 1}, "template_variable_invalid", "variables.flag"),
    ({"name": "a", "tags": [1, 2, 3]}, "template_variable_invalid", "variables.tags"),
    ({"name": "a", "tags": "x"}, "template_variable_invalid", "variables.tags"),
    ({"name": "a", "meta": []}, "template_variable_invalid", "variables.meta"),
])
def test_variable_checks(given: dict[str, Any], code: str, param: str) -> None:
    tpl = one("{{ name }}{{ tier }}{{ n }}{{ ratio }}{{ flag }}{{ tags }}{{ meta }}", VARS)
    with pytest.raises(TemplateError) as err:
        tpl.render(ENV, given)
    assert (err.value.code, err.value.param) == (code, param)
    assert param.split(".", 1)[1] in err.value.message


def test_defaults_and_optional_variables() -> None:
    tpl = one("{{ name }}|{{ tier }}|{{ n }}|{{ ratio }}|{{ flag }}|{{ tags }}|"
              "{% if n is none %}no n{% endif %}", VARS)
    assert render_text(tpl, {"name": "abc"}) == "abc|free||0.5|False|[]|no n"
    assert render_text(tpl, {"name": "abc", "n": 3, "tier": "pro"}).startswith("abc|pro|3|")


def test_missing_attribute_of_a_value_is_a_render_error() -> None:
    tpl = one("{{ o.missing }}", {"o": {"type": "object"}})
    with pytest.raises(TemplateError) as err:
        tpl.render(ENV, {"o": {"present": 1}})
    assert err.value.code == "template_render_error"
    assert "missing" in err.value.message and "line 1" in err.value.message


# --- the template shape ----------------------------------------------------------------------

@pytest.mark.parametrize("doc,where", [
    ({"name": "x", "messages": []}, "messages"),
    ({"name": "x"}, "messages"),
    ({"name": "a b", "messages": [{"role": "user", "content": "x"}]}, "name"),
    ({"name": "x", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"name": "x", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"name": "x", "bogus": 1, "messages": [{"role": "user", "content": "x"}]}, "bogus"),
    ({"name": "x", "variables": {"v": {"type": "uuid"}},
      "messages": [{"role": "user", "content": "x"}]}, "variables.v.type"),
    ({"name": "x", "variables": {"v": {"required": True, "default": "a"}},
      "messages": [{"role": "user", "content": "x"}]}, "variables.v.default"),
    ({"name": "x", "variables": {"v": {"type": "integer", "default": "a"}},
      "messages": [{"role": "user", "content": "x"}]}, "variables.v.default"),
    ({"name": "x", "variables": {"v": {"type": "integer", "enum": [1, "b"]}},
      "messages": [{"role": "user", "content": "x"}]}, "variables.v.enum[1]"),
    ({"name": "x", "variables": {"v": {"type": "integer", "max_length": 3}},
      "messages": [{"role": "user", "content": "x"}]}, "variables.v.max_length"),
    ({"name": "x", "variables": {"loop": {}}, "messages": [{"role": "user", "content": "x"}]},
     "variables.loop"),
    ({"name": "x", "variables": {"_x": {}}, "messages": [{"role": "user", "content": "x"}]},
     "variables._x"),
    ({"name": "x", "params": {"api_base": "http://evil"},
      "messages": [{"role": "user", "content": "x"}]}, "params.api_base"),
    ({"name": "x", "params": {"temperature": 7},
      "messages": [{"role": "user", "content": "x"}]}, "params.temperature"),
    ({"name": "x", "params": {"tools": [{"function": {"name": "f", "api_key": "k"}}]},
      "messages": [{"role": "user", "content": "x"}]}, "params.tools[0].function.api_key"),
])
def test_template_shape_problems_name_the_key(doc: dict[str, Any], where: str) -> None:
    problems = spec_problems(doc)
    assert isinstance(problems, list)
    assert where in [p[0] for p in problems], problems


def test_diff_yaml_round_trips() -> None:
    tpl = version_of({"name": "t", "description": "d", "model": "demo",
                      "params": {"temperature": 0.1},
                      "variables": {"a": {"type": "string", "default": "x"}},
                      "messages": [{"role": "system", "content": "line 1\nline {{ a }}\n"},
                                   {"role": "user", "content": "one line"}]})
    text = to_yaml(tpl.doc)
    assert "content: |" in text
    assert yaml.safe_load(text) == {k: v for k, v in tpl.doc.items() if v is not None}


def test_a_bad_prompt_file_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("messages: [{role: user, content: hi}]\n")
    (tmp_path / "broken.yaml").write_text("messages: [\n")
    (tmp_path / "evil.yaml").write_text(
        "messages:\n  - role: user\n    content: \"{{ cycler.__init__.__globals__ }}\"\n")
    (tmp_path / "other.yaml").write_text("name: not-other\nmessages: [{role: user, content: x}]\n")
    (tmp_path / "typo.yaml").write_text("messages: [{role: user, content: '{{ x }'}]\n")
    with pytest.raises(ConfigError) as err:
        load_prompt_files(tmp_path, ENV)
    lines = {line.split(":", 1)[0].rsplit("/", 1)[-1]: line for line in err.value.lines}
    assert set(lines) == {"broken.yaml", "evil.yaml", "other.yaml", "typo.yaml"}
    assert "line " in lines["broken.yaml"] and "not valid YAML" in lines["broken.yaml"]
    assert ": messages[0].content: " in lines["evil.yaml"] and "__globals__" in lines["evil.yaml"]
    assert ": name: " in lines["other.yaml"]
    assert ": messages[0].content: does not compile" in lines["typo.yaml"]


# --- the canary split ------------------------------------------------------------------------

@pytest.mark.parametrize("percent", [1, 10, 37.5, 90])
def test_canary_split_is_binomial_within_5_sigma(percent: float) -> None:
    label = Label("tpl", "production", 1, 2, percent, None, None)
    users = 20_000
    canary = sum(1 for i in range(users) if label.pick(f"user-{i}") == 2)
    p = percent / 100
    sigma = math.sqrt(users * p * (1 - p))
    assert abs(canary - users * p) <= 5 * sigma, (canary, users * p, sigma)


def test_canary_is_sticky_per_user_and_ramps_monotonically() -> None:
    small = Label("tpl", "production", 1, 2, 10, None, None)
    large = Label("tpl", "production", 1, 2, 30, None, None)
    users = [f"u{i}" for i in range(5000)]
    first = {u: small.pick(u) for u in users}
    for _ in range(3):
        assert {u: small.pick(u) for u in users} == first
    assert all(large.pick(u) == 2 for u in users if first[u] == 2)
    other_label = Label("tpl", "staging", 1, 2, 10, None, None)
    assert {u: other_label.pick(u) for u in users} != first  # independent per label


def test_canary_without_user_is_random_at_the_percentage() -> None:
    label = Label("tpl", "production", 1, 2, 25, None, None)
    draws = 20_000
    canary = sum(1 for _ in range(draws) if label.pick(None) == 2)
    sigma = math.sqrt(draws * 0.25 * 0.75)
    assert abs(canary - draws * 0.25) <= 5 * sigma


def test_set_in_one_message_does_not_leak_into_the_next() -> None:
    tpl = version_of({"name": "t", "variables": {"who": {"type": "string"}},
                      "messages": [{"role": "system", "content":
                                    "{% set who = 'shadow' %}{{ who }}"},
                                   {"role": "user", "content": "{{ who }}"}]})
    assert [m["content"] for m in tpl.render(ENV, {"who": "Ann"})] == ["shadow", "Ann"]
    assert [m["content"] for m in tpl.render(ENV, {"who": "Bo"})] == ["shadow", "Bo"]
