"""The shape the renovation set for ``kvideo/``: modules of one job stay under 400 lines and
functions under 80, so a newcomer can read one whole. A module that outgrows this is split by
job (as ``kvideo.data.tokenizer`` into ``tokenizer_base`` and ``hf_tokenizers``), not trimmed."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kvideo"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long


def test_no_function_is_over_80_lines() -> None:
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = length
    assert not long
