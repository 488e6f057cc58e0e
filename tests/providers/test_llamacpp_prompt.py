"""Prompt building, option parsing and output filtering for the llama.cpp provider (no model)."""

from __future__ import annotations

from typing import Any

import pytest

from lockgate.providers.llamacpp_prompt import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    EXAMPLE_EXCHANGE,
    HEADER,
    TURN_STOPS,
    OptionsError,
    OutputFilter,
    build_prompt,
    message_text,
    parse_options,
)


def test_prompt_is_a_transcript_ending_with_the_assistant_label() -> None:
    prompt = build_prompt(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What is 2+2?"},
        ]
    )
    assert prompt == (
        f"{HEADER}\n\n"
        "Instructions for the assistant: Be brief.\n\n"
        f"{EXAMPLE_EXCHANGE}"
        "User: Hi there\nAssistant: Hello!\nUser: What is 2+2?\nAssistant:"
    )


def test_prompt_without_system_has_no_instructions_line() -> None:
    prompt = build_prompt([{"role": "user", "content": "Hi"}])
    assert "Instructions" not in prompt
    assert prompt.startswith(HEADER + "\n\n" + EXAMPLE_EXCHANGE)
    assert prompt.endswith("User: Hi\nAssistant:")


def test_system_and_developer_messages_are_joined_into_instructions() -> None:
    prompt = build_prompt(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": "Answer in French."},
        ]
    )
    assert "Instructions for the assistant: Be brief. Answer in French.\n\n" in prompt


def test_blank_lines_inside_a_message_cannot_end_the_turn() -> None:
    prompt = build_prompt([{"role": "user", "content": "first para\n\n\nsecond para  \n"}])
    assert prompt.endswith("User: first para\nsecond para\nAssistant:")
    assert "\n\n" not in prompt.split(EXAMPLE_EXCHANGE, 1)[1]


def test_content_parts_are_joined_and_images_refused() -> None:
    assert message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "a\nb"
    assert message_text(None) == ""
    with pytest.raises(OptionsError, match="text only"):
        message_text([{"type": "image_url", "image_url": {"url": "data:..."}}])


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "at least one user message"),
        ([{"role": "system", "content": "x"}], "at least one user message"),
        ([{"role": "wizard", "content": "x"}], "not supported"),
        (["hello"], "must be an object"),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            ],
            "tool calls",
        ),
    ],
)
def test_bad_messages_are_refused(messages: list[Any], match: str) -> None:
    with pytest.raises(OptionsError, match=match):
        build_prompt(messages)


def test_options_defaults() -> None:
    opts = parse_options({"messages": []})
    assert opts.max_tokens == DEFAULT_MAX_TOKENS
    assert opts.temperature == DEFAULT_TEMPERATURE
    assert opts.stop == TURN_STOPS
    assert opts.seed is None


def test_options_are_honoured() -> None:
    opts = parse_options(
        {"max_tokens": 7, "temperature": 0, "top_p": 0.5, "stop": ["END", "\n\n"], "seed": 42}
    )
    assert (opts.max_tokens, opts.temperature, opts.top_p, opts.seed) == (7, 0.0, 0.5, 42)
    assert opts.stop == (*TURN_STOPS, "END")  # turn stops always on, no duplicates
    assert parse_options({"max_completion_tokens": 3, "max_tokens": 9}).max_tokens == 3
    assert parse_options({"stop": "X"}).stop[-1] == "X"
    assert parse_options({"seed": -1}).seed == 0xFFFFFFFF


@pytest.mark.parametrize(
    "body, match",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": [1]}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"seed": 1.5}, "seed"),
        ({"n": 2}, "one choice"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
    ],
)
def test_bad_options_are_refused(body: dict[str, Any], match: str) -> None:
    with pytest.raises(OptionsError, match=match):
        parse_options(body)


def feed_all(pieces: list[str], stops: tuple[str, ...] = TURN_STOPS) -> tuple[str, bool]:
    out = OutputFilter(stops)
    text = "".join(out.feed(p) for p in pieces) + out.finish()
    return text, out.stopped


def test_filter_strips_leading_and_trailing_whitespace() -> None:
    assert feed_all([" ", " Hello", ",", " world", " \n"]) == ("Hello, world", False)


def test_filter_stops_at_turn_markers_split_across_pieces() -> None:
    assert feed_all([" Paris", ".", "\n", "Us", "er", ": next"]) == ("Paris.", True)
    assert feed_all([" Paris.", "\n", "\n", "More"]) == ("Paris.", True)
    assert feed_all([" Paris.\nAssistant: again"]) == ("Paris.", True)


def test_filter_releases_held_text_that_was_not_a_stop() -> None:
    out = OutputFilter(TURN_STOPS)
    assert out.feed(" line one") == "line one"
    assert out.feed("\n") == ""  # might be the start of "\nUser:"
    assert out.feed("line two") == "\nline two"
    assert out.feed("\nUs") == ""
    assert out.finish() == "\nUs"  # generation ended (max_tokens): show what was held


def test_filter_user_stop_sequence() -> None:
    assert feed_all([" one, two, ST", "OP three"], (*TURN_STOPS, "STOP")) == ("one, two,", True)


def test_filter_leading_blank_lines_are_not_an_empty_answer_but_turns_are() -> None:
    assert feed_all(["\n\n", " Hi"]) == ("Hi", False)
    assert feed_all(["\n", "User: hi"]) == ("", True)


def test_filter_ignores_input_after_stop() -> None:
    out = OutputFilter(TURN_STOPS)
    assert out.feed("a\n\nb") == "a"
    assert out.feed("more") == ""
    assert out.finish() == ""
