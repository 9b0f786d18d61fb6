"""The context budget: what of a long transcript goes into the next prompt."""

from agent.context import HIDDEN_TOOL_OUTPUT, fit_context, prompt_tokens


def transcript(steps, tool_chars=3000, reasoning_chars=600):
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "question"}]
    for i in range(steps):
        call = {"id": f"functions.t:{i}", "type": "function", "function": {"name": "t", "arguments": "{}"}}
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "r" * reasoning_chars,
                "tool_calls": [call],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": f"functions.t:{i}", "content": f"out{i} " + "x" * tool_chars}
        )
    return messages


def test_a_prompt_under_budget_is_sent_unchanged():
    messages = transcript(2)
    assert fit_context(messages, 10**6) is messages


def test_over_budget_older_tool_outputs_are_hidden_and_the_newest_few_kept():
    messages = transcript(10, reasoning_chars=10)
    budget = prompt_tokens(messages) - 1000
    fitted = fit_context(messages, budget, keep_recent=3)
    tools = [m["content"] for m in fitted if m["role"] == "tool"]
    assert tools[:7] == [HIDDEN_TOOL_OUTPUT] * 7
    assert [t.split()[0] for t in tools[7:]] == ["out7", "out8", "out9"]
    assert prompt_tokens(fitted) <= budget
    assert messages[3]["content"].startswith("out0"), "the transcript itself is untouched"


def test_then_older_reasoning_goes_and_finally_the_oldest_steps_with_their_results():
    messages = transcript(40)
    budget = 3000
    fitted = fit_context(messages, budget, keep_recent=3)
    assert prompt_tokens(fitted) <= budget
    assert fitted[0]["role"] == "system" and fitted[1]["content"] == "question", "system and question stay"
    assert "earlier messages omitted" in fitted[2]["content"]
    # Every kept tool result still follows the assistant message that called it.
    for i, m in enumerate(fitted):
        if m["role"] == "tool":
            j = i
            while fitted[j]["role"] == "tool":
                j -= 1
            assert m["tool_call_id"] in {c["id"] for c in fitted[j]["tool_calls"]}
    assert fitted[-1]["content"].startswith("out39")
