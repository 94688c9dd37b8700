"""Cost and estimates: integer nano-dollars, cached-input and reasoning tokens priced when
reported, worst-case prices over fallbacks, unpriced models never a silent $0, budget
windows, and a tokenizer that stays bounded in time on a 10 MB single-word prompt."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from gateway import tokens
from gateway.config import load_config
from gateway.context import Principal, TeamRecord
from gateway.core.request import Reply, Usage
from gateway.limits import estimate
from gateway.limits.headers import RoomMemory, ratelimit_headers
from gateway.limits.limiter import Limiter
from gateway.limits.model import window_name, window_ttl_s
from gateway.limits.spend import SpendLog
from gateway.limits.store import MemoryStore
from gateway.offline_data import price_map_path
from gateway.pipeline.stages.cost import Cost
from gateway.pipeline.stages.limits import Limits
from gateway.policies.model import Budget
from gateway.policies.model import Limits as PolicyLimits
from gateway.pricing import Price, PriceBook, usage_cost_nanos
from gateway.providers.base import Target
from gateway.telemetry.metrics import Metrics
from tests.support.contexts import make_ctx

PRICE = Price(input_pico_per_token=1_000_000, output_pico_per_token=4_000_000,
              cached_input_pico_per_token=100_000, cache_write_pico_per_token=1_250_000,
              reasoning_pico_per_token=8_000_000)


def test_plain_usage_is_input_times_price_plus_output_times_price() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    assert usage_cost_nanos(usage, Price(2_500, 10_000)) == 3_500  # $2.50/M in, $10/M out


def test_cached_written_and_reasoning_tokens_have_their_own_rates() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 300,
             "prompt_tokens_details": {"cached_tokens": 600, "cache_creation_tokens": 100},
             "completion_tokens_details": {"reasoning_tokens": 200}}
    pico = (300 * 1_000_000 + 600 * 100_000 + 100 * 1_250_000
            + 100 * 4_000_000 + 200 * 8_000_000)
    assert usage_cost_nanos(usage, PRICE) == pico // 1000
    # Anthropic through litellm reports cache writes at the top level
    anthropic = {"prompt_tokens": 1000, "completion_tokens": 0,
                 "cache_creation_input_tokens": 100,
                 "prompt_tokens_details": {"cached_tokens": 600}}
    assert usage_cost_nanos(anthropic, PRICE) == (300 * 1_000_000 + 600 * 100_000
                                                  + 100 * 1_250_000) // 1000
    # without special rates they cost what plain tokens cost
    plain = Price(1_000_000, 4_000_000)
    assert usage_cost_nanos(usage, plain) == (1000 * 1_000_000 + 300 * 4_000_000) // 1000


def test_odd_provider_numbers_never_make_a_negative_or_inflated_cost() -> None:
    odd = {"prompt_tokens": 10, "completion_tokens": -5,
           "prompt_tokens_details": {"cached_tokens": 50},
           "completion_tokens_details": {"reasoning_tokens": "x"}}
    assert usage_cost_nanos(odd, PRICE) == 10 * 100_000 // 1000
    assert usage_cost_nanos({}, PRICE) == 0
    assert usage_cost_nanos({"prompt_tokens": True}, PRICE) == 0


def _config(tmp_path: Path, text: str):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def test_price_book_reads_the_map_overrides_and_the_worst_case(tmp_path: Path) -> None:
    cfg = _config(tmp_path, """
models:
  - name: cheap
    deployments: [{model: openai/gpt-4o-mini, api_base: "http://127.0.0.1:9/v1"}]
    fallbacks: [dear]
  - name: dear
    deployments: [{model: openai/whatever, api_base: "http://127.0.0.1:9/v1"}]
    pricing: {input_per_million: 30, output_per_million: 60}
    fallbacks: [mystery]
  - name: mystery
    deployments: [{model: openai/not-in-any-map, api_base: "http://127.0.0.1:9/v1"}]
  - name: demo
    deployments: [{model: demo/demo-1}]
  - name: claude
    deployments: [{model: anthropic/claude-x, api_base: "http://127.0.0.1:9"}]
    pricing: {input_per_million: 1, output_per_million: 5}
""")
    book = PriceBook.build(cfg, price_map_path())
    mini = book.price("cheap", "openai/gpt-4o-mini")
    assert mini is not None and mini.input_pico_per_token == 150_000
    assert mini.cached_input_pico_per_token == 75_000  # cache reads: half price
    assert book.price("dear", "openai/whatever") == Price(30_000_000, 60_000_000)
    assert book.price("mystery", "openai/not-in-any-map") is None
    assert book.cost("mystery", "openai/not-in-any-map", {"prompt_tokens": 5}) is None
    assert book.price("demo", "demo/demo-1") == Price(0, 0)
    assert book.reachable("cheap") == ["cheap", "dear", "mystery"]
    worst = book.worst_case("cheap")
    assert (worst.input_pico_per_token, worst.output_pico_per_token) == (30_000_000, 60_000_000)
    assert worst.unpriced == ("openai/not-in-any-map",)
    assert worst.max_output_tokens == 16_384  # gpt-4o-mini's, from the price map
    assert worst.cost_nanos(1, 1) == 90_000  # rounded up, never short
    assert book.worst_case("demo").unpriced == ()
    # another tokenizer than tiktoken's: the reserved prompt is padded by a quarter
    assert worst.reserve_input(100) == 100
    assert book.worst_case("claude").reserve_input(100) == 125


def _stage(tmp_path: Path, mode: str) -> tuple[Limits, Metrics]:
    cfg = _config(tmp_path, """
models:
  - name: local
    deployments: [{model: openai/my-local-llama, api_base: "http://127.0.0.1:9/v1"}]
""")
    metrics = Metrics()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    limiter = Limiter(MemoryStore(), SpendLog(engine), PriceBook.build(cfg, price_map_path()),
                      unpriced_models=mode, metrics=metrics)
    return Limits(limiter, RoomMemory()), metrics


def _served_ctx() -> Any:
    ctx = make_ctx("chat", {"model": "local", "messages": [{"role": "user", "content": "x"}]},
                   principal=Principal(key_id="k1", key_name="k", role="app"), model="local")
    ctx.event.fields["received_at"] = datetime(2026, 1, 1)
    ctx.target = Target("local", "openai/my-local-llama", "openai", "openai/my-local-llama",
                        "my-local-llama", "http://127.0.0.1:9/v1", None, 1, 1, 1, 1)
    ctx.usage = Usage(3, 4, 7)
    return ctx


@pytest.mark.parametrize("mode,cost,counted", [("warn", None, 1.0), ("zero", 0, None)])
def test_unpriced_served_model_is_unknown_and_counted_or_declared_free(
        tmp_path: Path, mode: str, cost: int | None, counted: float | None) -> None:
    limits, metrics = _stage(tmp_path, mode)
    stage = Cost(limits.prices, mode, metrics)
    ctx = _served_ctx()

    async def served(ctx: Any) -> Reply:
        return Reply(body={})

    asyncio.run(stage(ctx, served))
    assert ctx.cost_nanos == cost and ctx.event.fields["cost_nanos"] == cost
    assert metrics.registry.get_sample_value("gateway_unpriced_requests_total",
                                             {"model": "local"}) == counted


def test_block_mode_refuses_an_unpriced_model(tmp_path: Path) -> None:
    stage, _ = _stage(tmp_path, "block")
    from gateway.errors import Forbidden

    with pytest.raises(Forbidden) as refused:
        asyncio.run(stage.reserve(_served_ctx()))
    assert refused.value.code == "model_unpriced"


def test_scopes_tighter_wins_and_budgets_share_a_window() -> None:
    team = TeamRecord(id="t", name="red", models=None, rpm=50, tpm=None, max_concurrent=None,
                      budget_nanos=7, budget_period="day", policy=None)
    p = Principal(key_id="k9", key_name="k", role="app", team="red", rpm=100, tpm=1000,
                  budget_nanos=5_000_000_000, budget_period="month", team_record=team)
    scopes = Limiter.scopes(p, PolicyLimits(rpm=10, max_concurrent=2), "m", "alice")
    assert [(s.kind, s.rpm, s.tpm, s.max_concurrent) for s in scopes] == [
        ("key", 10, 1000, 2), ("team", 50, None, None)]  # user/model scopes cannot bind
    now = datetime(2026, 2, 10, 12)
    limiter = Limiter(MemoryStore(), None, None)  # type: ignore[arg-type]
    limiter.baselines = {"k:k9:m2026-02": 123}
    budgets = limiter.budgets(p, Budget(usd=2.5, period="month"), now)
    assert [(b.counter, b.limit_nanos, b.baseline_nanos) for b in budgets] == [
        ("k:k9:m2026-02", 2_500_000_000, 123), ("t:red:d2026-02-10", 7, 0)]


def test_budget_windows_are_calendar_utc() -> None:
    end_of_feb = datetime(2028, 2, 29, 23, 59, 30)
    assert window_name("day", end_of_feb) == "d2028-02-29"
    assert window_name("month", end_of_feb) == "m2028-02"
    assert window_name("total", end_of_feb) == "t"
    assert window_ttl_s("day", end_of_feb) == 30 + 86_400
    assert window_ttl_s("month", end_of_feb) == 30 + 86_400
    assert window_ttl_s("total", end_of_feb) == 0


def test_headers_describe_the_scope_with_least_room() -> None:
    from gateway.limits.model import Decision, Room

    headers = ratelimit_headers(Decision(True, requests=Room(10, 3, 61.5),
                                         tokens=Room(1000, 0, 0.25)))
    assert headers == {"x-ratelimit-limit-requests": "10",
                       "x-ratelimit-remaining-requests": "3",
                       "x-ratelimit-reset-requests": "1m2s",
                       "x-ratelimit-limit-tokens": "1000",
                       "x-ratelimit-remaining-tokens": "0",
                       "x-ratelimit-reset-tokens": "0.25s"}
    assert ratelimit_headers(Decision(True)) == {}


def test_tokenizer_stays_bounded_on_a_10mb_single_word() -> None:
    small, big = "a" * 1_000_000, "a" * 10_000_000
    t0 = time.perf_counter()
    assert tokens.count_text(small, "gpt-4o-mini") > 0
    t1 = time.perf_counter()
    assert tokens.count_text(big, "gpt-4o-mini") > 0
    t2 = time.perf_counter()
    assert t2 - t1 < 60  # generous: about 1.5 s on this machine; quadratic would be hours
    assert (t2 - t1) < 40 * max(t1 - t0, 0.01)  # linear in the size, give or take


async def test_large_prompts_are_counted_off_the_event_loop() -> None:
    body = {"messages": [{"role": "user", "content": "word " * 200_000}]}
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    count = await estimate.prompt_tokens("chat", body, "gpt-4o-mini")
    task.cancel()
    assert count >= 200_000
    assert ticks > 0  # the loop ran while the prompt was being counted
    assert tokens.count_request("completions", {"prompt": [[1, 2, 3], [4]]}, "x") == 4
    assert tokens.count_request("embeddings", {"input": ["a b", "c"]}, "x") >= 3
    assert estimate.requested_output({"max_tokens": 7}) == ("max_tokens", 7)
    assert estimate.requested_output({"max_completion_tokens": 9, "max_tokens": 7}) == \
        ("max_completion_tokens", 9)
    assert estimate.choices({"n": 3}) == 3 and estimate.choices({}) == 1
