"""The built-in demo provider, called directly: deterministic and with real token counts."""

from __future__ import annotations

import base64
import struct

from gateway import tokens
from gateway.providers.base import Target
from gateway.providers.demo import PREFIX, DemoProvider

TARGET = Target(model="demo", deployment="demo/demo-1", provider="demo",
                litellm_model="demo/demo-1", upstream_model="demo-1", api_base=None,
                api_key=None, timeout_s=1, connect_timeout_s=1, first_token_timeout_s=1,
                idle_timeout_s=1)


async def test_chat_usage_matches_tiktoken() -> None:
    body = {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "ping"}]}]}
    out = await DemoProvider().call("chat", body, TARGET)
    text = out["choices"][0]["message"]["content"]
    assert text == PREFIX + "ping"
    assert out["usage"]["completion_tokens"] == tokens.count_text(text)
    assert out["usage"]["prompt_tokens"] == tokens.count_messages(body["messages"])


async def test_stream_chunks_join_to_the_plain_answer() -> None:
    body = {"messages": [{"role": "user", "content": "one two  three"}]}
    plain = await DemoProvider().call("chat", body, TARGET)
    chunks = [c async for c in DemoProvider().stream("chat", body, TARGET)]
    joined = "".join(c["choices"][0]["delta"].get("content") or ""
                     for c in chunks if c["choices"])
    assert joined == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == plain["usage"]


async def test_embeddings_are_unit_vectors_and_base64_matches_float() -> None:
    floats = await DemoProvider().call("embeddings", {"input": "abc", "dimensions": 8}, TARGET)
    b64 = await DemoProvider().call("embeddings", {"input": "abc", "dimensions": 8,
                                                   "encoding_format": "base64"}, TARGET)
    vec = floats["data"][0]["embedding"]
    assert abs(sum(v * v for v in vec) - 1) < 1e-9
    unpacked = struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))
    assert all(abs(a - b) < 1e-6 for a, b in zip(unpacked, vec, strict=True))
    other = await DemoProvider().call("embeddings", {"input": "abd", "dimensions": 8}, TARGET)
    assert other["data"][0]["embedding"] != vec


def test_token_counting_is_bounded_on_one_huge_word() -> None:
    import time

    start = time.perf_counter()
    n = tokens.count_text("a" * 2_000_000)
    assert n > 0
    assert time.perf_counter() - start < 5
