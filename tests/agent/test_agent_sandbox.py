"""The python tool as the model sees it: its description tells the truth, and what it answers.

The sandbox's isolation and the interpreter are specified in tests/sandbox/.
"""

import pytest

from agent.tools import ToolContext, get_tool
from agent.tools.python import LIMITS

pytestmark = pytest.mark.timeout(60)


def test_the_description_names_the_packages_limits_persistence_and_output_folder():
    text = get_tool("python").description
    for fact in ("numpy", "pandas", "matplotlib", "scipy", "sympy", "no network", "/work/out", "persist"):
        assert fact in text
    assert f"{LIMITS.processes} processes" in text and "1 GiB" in text


def test_plain_code_runs_and_prints_and_a_final_expression_is_shown():
    result = get_tool("python").run({"code": "print(sum(range(10)))\n2 ** 10"}, ToolContext())
    assert result.text == "45\n1024" and result.ok


def test_a_traceback_is_shown_to_the_model_without_the_drivers_frames():
    result = get_tool("python").run({"code": "1 / 0"}, ToolContext())
    assert "ZeroDivisionError: division by zero" in result.text and "driver" not in result.text


def test_bad_arguments_are_a_clear_tool_error():
    from agent.tools import ToolError

    with pytest.raises(ToolError, match="non-empty string"):
        get_tool("python").run({"code": ""}, ToolContext())


def test_a_sleeping_program_is_killed_at_the_wall_timeout():
    result = get_tool("python").run({"code": "import time; time.sleep(60)"}, ToolContext(timeout=1.5))
    assert "timed out" in result.error
