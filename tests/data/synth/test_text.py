"""Text families (D_task, D_conv): answers re-derived independently from the problem text or `meta`."""

import ast
import operator
import re
from fractions import Fraction

import numpy as np
import pytest

from mgrd.data.manifest import check_manifest, write_manifest
from mgrd.data.synth.text import FAMILIES
from mgrd.data.synth.writer import manifest_item
from mgrd.tasks.grading import find_numbers, grade

FAMILY = {f.name: f for f in FAMILIES}
SPLITS = ["train", "ood"]
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _items(name: str, n: int, split: str = "train", seed: int = 0):
    rng = np.random.default_rng(seed)
    return [FAMILY[name].make(rng, split) for _ in range(n)]


def _row(item, name: str, i: int = 0) -> dict:
    return manifest_item(item, f"{name}-{i:06d}", name, []).to_row(".")


def evaluate(expr: str) -> Fraction:
    """Exact value of a + - * / expression of integers (standard precedence)."""

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = walk(node.left), walk(node.right)
            return left / right if isinstance(node.op, ast.Div) else _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unexpected syntax in {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


# ---------------------------------------------------------------- text_arithmetic


@pytest.mark.parametrize("split", SPLITS)
def test_arithmetic_answer_equals_the_expression_and_the_question_states_it(split):
    for item in _items("text_arithmetic", 150, split):
        expr = item.meta["expression"]
        value = evaluate(expr)
        assert value.denominator == 1 and value >= 0 and item.answer == str(value.numerator)
        if item.meta["form"] == "expression":
            shown = item.question.removeprefix("Compute ").removesuffix(".")
            assert evaluate(shown.replace("×", "*").replace("÷", "/")) == value and shown.count("(") == expr.count("(")
        else:  # a word problem mentions exactly the expression's numbers, in order
            assert find_numbers(item.question) == [int(t) for t in re.findall(r"\d+", expr)]


# ---------------------------------------------------------------- text_compare

_UNIT = {"kg": 1000, "g": 1, "km": 1000, "m": 1, "l": 1000, "ml": 1}


def quantity(text: str) -> Fraction:
    """Value of '3/4', '0.7', '45%', '2^5', '2.5 kg', '2300 g' in a common unit."""
    if m := re.fullmatch(r"(\d+)/(\d+)", text):
        return Fraction(int(m[1]), int(m[2]))
    if m := re.fullmatch(r"(\d+)%", text):
        return Fraction(int(m[1]), 100)
    if m := re.fullmatch(r"(\d+)\^(\d+)", text):
        return Fraction(int(m[1]) ** int(m[2]))
    if m := re.fullmatch(r"([\d.]+) (kg|g|km|m|l|ml)", text):
        return Fraction(m[1]) * _UNIT[m[2]]
    return Fraction(text)


@pytest.mark.parametrize("split", SPLITS)
def test_compare_answer_is_the_larger_or_smaller_quantity(split):
    items = _items("text_compare", 200, split)
    for item in items:
        m = re.fullmatch(r"Which is (larger|smaller): (.+) or (.+)\?", item.question)
        assert m and item.choices == [m[2], m[3]]
        a, b = quantity(m[2]), quantity(m[3])
        assert a != b
        want = (m[2] if a > b else m[3]) if m[1] == "larger" else (m[2] if a < b else m[3])
        assert item.answer == want
    assert 0.4 < np.mean([it.answer == it.choices[0] for it in items]) < 0.6  # no position bias


# ---------------------------------------------------------------- text_logic

_SUPERLATIVE = {"tallest": True, "oldest": True, "fastest": True, "heaviest": True,
                "shortest": False, "youngest": False, "slowest": False, "lightest": False}


def _solve_ordering(question: str) -> str:
    facts = re.findall(r"(\w+) is \w+er than (\w+)\.", question)
    ask = re.search(r"Who is the (\w+)\?", question)[1]
    people = {p for fact in facts for p in fact}
    beaten = {b for _, b in facts} if _SUPERLATIVE[ask] else {a for a, _ in facts}
    (answer,) = people - beaten  # the only one never ranked below (or above) anyone
    return answer


def _solve_boolean(question: str) -> str:
    expr = re.fullmatch(r"Is the following expression true or false: (.+)\?", question)[1]
    assert set(re.findall(r"\w+|\S", expr)) <= {"true", "false", "and", "or", "not", "(", ")"}
    return str(eval(expr.replace("true", "True").replace("false", "False"), {"__builtins__": {}})).lower()


@pytest.mark.parametrize("split", SPLITS)
def test_logic_answers_follow_from_the_question_alone(split):
    items = _items("text_logic", 200, split)
    for item in items:
        solve = _solve_boolean if item.question.startswith("Is the following") else _solve_ordering
        assert item.answer == solve(item.question) and item.answer in item.choices
    booleans = [it.answer for it in items if it.choices and set(it.choices) == {"true", "false"}]
    assert 0.35 < booleans.count("true") / len(booleans) < 0.65


def test_logic_orderings_are_fully_determined():
    for item in _items("text_logic", 100):
        if "facts" in item.meta:
            assert len(item.meta["facts"]) == len(item.choices) - 1  # a chain: n people, n - 1 facts
            assert sorted({p for f in item.meta["facts"] for p in f}) == sorted(item.choices)


# ---------------------------------------------------------------- conversation


@pytest.mark.parametrize("split", SPLITS)
def test_conversation_reply_holds_the_calculated_answer(split):
    for item in _items("conversation", 150, split):
        msgs = item.messages
        assert item.question is None and item.choices is None
        roles = [m["role"] for m in msgs if m["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) >= 4
        assert msgs[-1]["content"] == item.answer and msgs[-2]["content"].endswith("?")
        value = evaluate(item.meta["expression"])
        assert value.denominator == 1 and find_numbers(item.answer)[-1] == value
        said = [n for m in msgs[:-1] if m["role"] == "user" for n in find_numbers(m["content"])]
        assert set(find_numbers(item.meta["expression"])) <= set(said)  # every operand was said by the user
        assert find_numbers(item.reasonings["text"])[-1] == value


# ---------------------------------------------------------------- all families


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_reasoning_is_text_style_and_ends_with_the_answer_the_grader_accepts(name):
    for i, item in enumerate(_items(name, 60, seed=1)):
        row = _row(item, name, i)
        assert row["audio"] == [] and row["reasoning_style"] == "text" and set(row["reasonings"]) == {"text"}
        if FAMILY[name].kind == "text":
            assert row["reasoning"].endswith(f"The answer is {item.answer}.")
        response = f"<think>\n{row['reasoning']}\n</think>\n{item.answer}"
        assert grade(row, response) == 1.0
        wrong = "12345" if FAMILY[name].grader == "numeric" else next(c for c in item.choices if c != item.answer)
        assert grade(row, f"<think>\n{row['reasoning']}\n</think>\n{wrong}") == 0.0


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_deterministic_for_a_seed(name):
    rows = [[_row(it, name, i) for i, it in enumerate(_items(name, 20, seed=s))] for s in (3, 3, 4)]
    assert rows[0] == rows[1] and rows[0] != rows[2]


def test_rows_pass_the_manifest_check(tmp_path):
    rows = [_row(it, name, i) for name in FAMILY for i, it in enumerate(_items(name, 25, seed=2))]
    report = check_manifest(write_manifest(rows, tmp_path / "manifest.jsonl"))
    assert report.ok and report.n_rows == len(rows) and not report.warnings
