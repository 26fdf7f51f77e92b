"""Text-only families with verifiable answers: D_task (task chain-of-thought) and D_conv (conversation).

They feed the three-source SFT (DESIGN.md §5) next to the audio items:
- `text_arithmetic`: multi-step arithmetic, bare expressions or word problems; numeric answer.
- `text_compare`: which of two quantities written differently (3/4 vs 0.7, 2^5 vs 5^2, 2.5 kg vs 2300 g)
  is larger or smaller; choice answer.
- `text_logic`: who is first/last in an order given by shuffled pairwise facts, or whether a small boolean
  expression is true or false; choice answer.
- `conversation`: a short multi-turn chat whose last user turn asks for a small calculation over what was
  said before; the item carries `messages` (last one the assistant's target reply, which is the `answer`)
  and a numeric grader reads the reply's final number.

Every item's reasoning (`reasoning_style: "text"`) works the problem step by step and ends with the answer
(D_task: "The answer is X."). `meta` holds what an independent check needs to re-derive the answer
(an evaluable expression, the ordering facts, the quantities). The `ood` split uses longer problems and
larger numbers. No audio; nothing here touches the disk.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from mgrd.data.synth.base import Family, SynthItem

_SIGN = {"+": "+", "-": "-", "*": "×", "/": "÷"}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _count(n: int, plural: str) -> str:
    """'1 apple', '3 apples' (every noun used here forms its plural with a final s)."""
    return f"{n} {plural[:-1] if n == 1 else plural}"


def _text_item(question: str, answer, reasoning: str, meta: dict, choices: list[str] | None = None) -> SynthItem:
    return SynthItem(question=question, answer=str(answer), choices=choices, meta=meta,
                     reasonings={"text": reasoning}, default_style="text")


def _shuffled(rng: np.random.Generator, values: list) -> list:
    return [values[i] for i in rng.permutation(len(values))]


# ---------------------------------------------------------------- arithmetic


def _next_step(rng: np.random.Generator, total: int, hi: int) -> tuple[str, int, bool]:
    """One more operation on a running total: (op, operand, operand goes first); whole results >= 0."""
    op = _pick(rng, ["+", "-", "*", "/"])
    if op == "*" and abs(total) > 200:
        op = "-"
    if op == "/":
        divisors = [d for d in range(2, 13) if total % d == 0]
        if total == 0 or not divisors:
            op = "+"
        else:
            return op, _pick(rng, divisors), False
    if op == "-" and total < 1:
        op = "+"
    if op == "-":
        return op, int(rng.integers(1, total + 1)), False
    if op == "*":
        return op, int(rng.integers(2, 10)), bool(rng.random() < 0.5)
    return op, int(rng.integers(1, hi + 1)), bool(rng.random() < 0.5)


def _apply(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a // b


def _arithmetic_expression(rng: np.random.Generator, split: str) -> SynthItem:
    n_ops, hi = (int(rng.integers(3, 5)), 60) if split == "ood" else (int(rng.integers(2, 4)), 20)
    total = int(rng.integers(1, hi + 1))
    expr, low_precedence = str(total), False  # low: the expression's top operation is + or -
    steps = []
    for _ in range(n_ops):
        op, v, first = _next_step(rng, total, hi)
        # parenthesise so the written order of operations is the order of the steps below
        if (op in "*/" and low_precedence) or (first and steps):
            expr = f"({expr})"
        expr = f"{v} {op} {expr}" if first else f"{expr} {op} {v}"
        low_precedence = op in "+-"
        new = _apply(total, op, v)
        a, b = (v, total) if first else (total, v)
        steps.append(f"{a} {_SIGN[op]} {b} = {new}")
        total = new
    shown = expr.replace("*", "×").replace("/", "÷")
    reasoning = ("Work from the innermost operation outwards. " + ". ".join(
        f"{'First' if i == 0 else 'Then'}, {s}" for i, s in enumerate(steps)) + f". The answer is {total}.")
    return _text_item(f"Compute {shown}.", total, reasoning, {"expression": expr, "form": "expression"})


def _shop_problem(rng: np.random.Generator, hi: int) -> tuple[str, str, list[str], int]:
    thing = _pick(rng, ["apples", "notebooks", "candles", "oranges"])
    a = int(rng.integers(hi // 2, hi + 1))
    sold = int(rng.integers(1, a))
    boxes, per = int(rng.integers(2, 7)), int(rng.integers(2, 13))
    q = (f"A shop has {a} {thing}. It sells {sold} of them and then receives {boxes} boxes of {per} {thing} "
         f"each. How many {thing} does the shop have now?")
    left, extra = a - sold, boxes * per
    steps = [f"After selling {sold}, the shop has {a} - {sold} = {_count(left, thing)}",
             f"{boxes} boxes of {per} hold {boxes} × {per} = {extra} {thing}",
             f"Together that is {left} + {extra} = {left + extra}"]
    return q, f"{a} - {sold} + {boxes} * {per}", steps, left + extra


def _savings_problem(rng: np.random.Generator, hi: int) -> tuple[str, str, list[str], int]:
    name = _pick(rng, ["Maya", "Omar", "Lena", "Tom"])
    start, weekly, weeks = int(rng.integers(0, hi + 1)), int(rng.integers(2, 16)), int(rng.integers(2, 9))
    saved = start + weekly * weeks
    spent = int(rng.integers(1, saved + 1))
    q = (f"{name} has {_count(start, 'dollars')} and saves {weekly} dollars every week for {weeks} weeks, then "
         f"spends {_count(spent, 'dollars')} on a gift. How many dollars does {name} have left?")
    steps = [f"Saving {weekly} dollars for {weeks} weeks adds {weekly} × {weeks} = {weekly * weeks} dollars",
             f"With the first {_count(start, 'dollars')} that makes {start} + {weekly * weeks} = {saved}",
             f"After the gift, {saved} - {spent} = {saved - spent} {'is' if saved - spent == 1 else 'are'} left"]
    return q, f"{start} + {weekly} * {weeks} - {spent}", steps, saved - spent


def _travel_problem(rng: np.random.Generator, hi: int) -> tuple[str, str, list[str], int]:
    speed, hours = int(rng.integers(4, 13)) * 5, int(rng.integers(2, 6))
    more = int(rng.integers(1, hi + 1))
    first = speed * hours
    q = (f"A bus drives at {speed} kilometres per hour for {hours} hours and then another {more} kilometres. "
         f"How many kilometres does it drive in total?")
    steps = [f"At {speed} km/h for {hours} hours the bus covers {speed} × {hours} = {first} km",
             f"Adding the last {more} km gives {first} + {more} = {first + more}"]
    return q, f"{speed} * {hours} + {more}", steps, first + more


_WORD_PROBLEMS = [_shop_problem, _savings_problem, _travel_problem]


def _arithmetic_word_problem(rng: np.random.Generator, split: str) -> SynthItem:
    q, expr, steps, answer = _pick(rng, _WORD_PROBLEMS)(rng, 90 if split == "ood" else 30)
    reasoning = ". ".join(steps) + f". The answer is {answer}."
    return _text_item(q, answer, reasoning, {"expression": expr, "form": "word_problem"})


def _make_text_arithmetic(rng: np.random.Generator, split: str) -> SynthItem:
    return (_arithmetic_expression if rng.random() < 0.5 else _arithmetic_word_problem)(rng, split)


# ---------------------------------------------------------------- comparisons


def _fraction_vs_decimal(rng: np.random.Generator, ood: bool) -> list[tuple[str, Fraction, str]]:
    """Two numbers, one written as a fraction and one as a decimal or percentage."""
    den = int(rng.integers(3, 17 if ood else 10))
    num = int(rng.integers(1, den))
    frac = Fraction(num, den)
    while True:
        other = Fraction(int(rng.integers(1, 100)), 100)
        if other != frac:
            break
    other_text = f"{other.numerator * 100 // other.denominator}%" if rng.random() < 0.4 else f"{float(other):g}"
    return [(f"{num}/{den}", frac, f"{num}/{den} = {float(frac):.3f}"),
            (other_text, other, f"{other_text} = {float(other):.3f}")]


def _powers(rng: np.random.Generator, ood: bool) -> list[tuple[str, Fraction, str]]:
    while True:
        a, b = int(rng.integers(2, 10 if ood else 7)), int(rng.integers(2, 7 if ood else 5))
        if a != b and a ** b != b ** a:
            break
    return [(f"{a}^{b}", Fraction(a ** b), f"{a}^{b} = {a ** b}"),
            (f"{b}^{a}", Fraction(b ** a), f"{b}^{a} = {b ** a}")]


def _units(rng: np.random.Generator, ood: bool) -> list[tuple[str, Fraction, str]]:
    big, small, factor = _pick(rng, [("kg", "g", 1000), ("km", "m", 1000), ("l", "ml", 1000)])
    tenths = int(rng.integers(11, 100 if ood else 50))
    while True:
        smalls = int(rng.integers(tenths - 9, tenths + 10)) * 100
        if smalls != tenths * 100:
            break
    big_value = Fraction(tenths, 10)
    return [(f"{float(big_value):g} {big}", big_value * factor,
             f"{float(big_value):g} {big} = {int(big_value * factor)} {small}"),
            (f"{smalls} {small}", Fraction(smalls), f"{smalls} {small} stays {smalls} {small}")]


_COMPARISONS = [_fraction_vs_decimal, _powers, _units]


def _make_text_compare(rng: np.random.Generator, split: str) -> SynthItem:
    pair = _pick(rng, _COMPARISONS)(rng, split == "ood")
    pair = _shuffled(rng, pair)
    ask = _pick(rng, ["larger", "smaller"])
    (ta, va, ea), (tb, vb, eb) = pair
    winner = ta if (va > vb) == (ask == "larger") else tb
    relation = ">" if va > vb else "<"
    question = f"Which is {ask}: {ta} or {tb}?"
    reasoning = (f"Put both in the same form. {ea}, and {eb}. Comparing, {ta} {relation} {tb}, "
                 f"so the {ask} one is {winner}. The answer is {winner}.")
    return _text_item(question, winner, reasoning, {"options": [ta, tb], "ask": ask}, choices=[ta, tb])


# ---------------------------------------------------------------- logic

NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
RELATIONS = [("taller", "tallest", "shortest"), ("older", "oldest", "youngest"),
             ("faster", "fastest", "slowest"), ("heavier", "heaviest", "lightest")]


def _ordering(rng: np.random.Generator, split: str) -> SynthItem:
    n = int(rng.integers(5, 7)) if split == "ood" else int(rng.integers(3, 5))
    people = [str(p) for p in rng.choice(NAMES, size=n, replace=False)]  # people[0] ranks highest
    comparative, most, least = _pick(rng, RELATIONS)
    facts = _shuffled(rng, [[people[i], people[i + 1]] for i in range(n - 1)])
    ask_most = bool(rng.random() < 0.5)
    answer = people[0] if ask_most else people[-1]
    superlative = most if ask_most else least
    question = " ".join(f"{a} is {comparative} than {b}." for a, b in facts) + f" Who is the {superlative}?"
    chain = " > ".join(people)
    reasoning = ("Chain the facts: " + "; ".join(f"{a} > {b}" for a, b in facts)
                 + f". Linking them gives the order {chain}, from {most} to {least}. "
                 f"The {superlative} is {answer}. The answer is {answer}.")
    meta = {"facts": facts, "relation": comparative, "ask": "most" if ask_most else "least"}
    return _text_item(question, answer, reasoning, meta, choices=_shuffled(rng, people))


def _bool_tree(rng: np.random.Generator, depth: int):
    """A random boolean expression tree: True/False leaves, ("not", x), (op, x, y)."""
    if depth == 0:
        return bool(rng.random() < 0.5)
    if rng.random() < 0.25:
        return ("not", _bool_tree(rng, depth - 1))
    return (_pick(rng, ["and", "or"]), _bool_tree(rng, depth - 1), _bool_tree(rng, int(rng.integers(0, depth))))


def _render(node, top: bool = True) -> str:
    if isinstance(node, bool):
        return str(node).lower()
    if node[0] == "not":
        return f"not {_render(node[1], top=False)}"
    text = f"{_render(node[1], top=False)} {node[0]} {_render(node[2], top=False)}"
    return text if top else f"({text})"


def _evaluate(node, steps: list[str]) -> bool:
    """Evaluate bottom-up, recording one step per operator."""
    if isinstance(node, bool):
        return node
    if node[0] == "not":
        value = not _evaluate(node[1], steps)
        steps.append(f"not {str(not value).lower()} is {str(value).lower()}")
        return value
    left, right = _evaluate(node[1], steps), _evaluate(node[2], steps)
    value = (left and right) if node[0] == "and" else (left or right)
    steps.append(f"{str(left).lower()} {node[0]} {str(right).lower()} is {str(value).lower()}")
    return value


def _boolean(rng: np.random.Generator, split: str) -> SynthItem:
    target = bool(rng.random() < 0.5)
    depth = 3 if split == "ood" else 2
    while True:  # draw until the value matches the balanced target
        tree = _bool_tree(rng, depth)
        steps: list[str] = []
        if not isinstance(tree, bool) and _evaluate(tree, steps) == target:
            break
    expr = _render(tree)
    answer = str(target).lower()
    question = f"Is the following expression true or false: {expr}?"
    reasoning = "Evaluate the innermost parts first. " + ". ".join(
        s[0].upper() + s[1:] for s in steps) + f". The answer is {answer}."
    meta = {"expression": expr}
    return _text_item(question, answer, reasoning, meta, choices=_shuffled(rng, ["true", "false"]))


def _make_text_logic(rng: np.random.Generator, split: str) -> SynthItem:
    return (_ordering if rng.random() < 0.5 else _boolean)(rng, split)


# ---------------------------------------------------------------- conversation


def _tally_chat(rng: np.random.Generator, hi: int) -> tuple[list[tuple[str, str]], str, str, str]:
    items = _pick(rng, ["stickers", "marbles", "books", "stamps"])
    a, b = int(rng.integers(2, hi + 1)), int(rng.integers(1, hi + 1))
    c = int(rng.integers(1, a + b + 1))
    turns = [(f"I'm keeping track of my {items}. I start with {a}.", f"Okay, you're starting with {_count(a, items)}."),
             (f"I just got {b} more from a friend.", f"Noted, {b} more.")]
    ans = a + b - c
    final_q = f"Then I gave {c} to my sister. How many {items} do I have now?"
    reasoning = (f"You started with {_count(a, items)} and got {b} more: {a} + {b} = {a + b}. "
                 f"Giving away {c} leaves {a + b} - {c} = {ans}. So you have {_count(ans, items)}.")
    return turns + [(final_q, "")], f"{a} + {b} - {c}", reasoning, f"You have {_count(ans, items)} now."


def _bill_chat(rng: np.random.Generator, hi: int) -> tuple[list[tuple[str, str]], str, str, str]:
    n, each, tip = int(rng.integers(2, 7)), int(rng.integers(8, hi + 10)), int(rng.integers(2, 13))
    total = n * each  # > 12 >= tip, so the bill is positive
    bill = total - tip
    turns = [(f"We just had dinner and the bill came to {bill} dollars.", f"Got it, a bill of {bill} dollars.")]
    final_q = (f"We want to add a {tip} dollar tip and split everything evenly between {n} people. "
               "How much does each person pay?")
    reasoning = (f"The bill plus the tip is {bill} + {tip} = {total} dollars. Split between {n} people, "
                 f"{total} ÷ {n} = {each}. So each person pays {each} dollars.")
    return turns + [(final_q, "")], f"({bill} + {tip}) / {n}", reasoning, f"Each person pays {each} dollars."


def _reading_chat(rng: np.random.Generator, hi: int) -> tuple[list[tuple[str, str]], str, str, str]:
    rate, days = int(rng.integers(5, 31)), int(rng.integers(2, hi // 2 + 3))
    done = int(rng.integers(10, 200))
    pages = done + rate * days
    turns = [(f"I'm reading a novel with {pages} pages.", f"Nice, {pages} pages is a good read."),
             (f"So far I've read {done} pages.", f"Great, {done} pages done.")]
    final_q = f"If I read {rate} pages a day from now on, how many more days until I finish?"
    more_days = f"{days} more {'day' if days == 1 else 'days'}"
    reasoning = (f"Pages left: {pages} - {done} = {pages - done}. At {rate} pages a day that takes "
                 f"{pages - done} ÷ {rate} = {_count(days, 'days')}. So you need {more_days}.")
    return turns + [(final_q, "")], f"({pages} - {done}) / {rate}", reasoning, f"You need {more_days}."


_CHATS = [_tally_chat, _bill_chat, _reading_chat]


def _make_conversation(rng: np.random.Generator, split: str) -> SynthItem:
    template = _pick(rng, _CHATS)
    turns, expr, reasoning, reply = template(rng, 90 if split == "ood" else 30)
    messages = [{"role": "system", "content": "You are a helpful assistant."}] if rng.random() < 0.5 else []
    for user, assistant in turns:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant or reply})
    meta = {"template": template.__name__.strip("_"), "expression": expr}
    return SynthItem(question=None, answer=reply, choices=None, meta=meta, messages=messages,
                     reasonings={"text": reasoning}, default_style="text")


FAMILIES: list[Family] = [
    Family("text_arithmetic", "text", "numeric", _make_text_arithmetic,
           "Multi-step arithmetic, bare expressions or word problems (D_task)."),
    Family("text_compare", "text", "choice", _make_text_compare,
           "Which of two differently written quantities is larger or smaller (D_task)."),
    Family("text_logic", "text", "choice", _make_text_logic,
           "Orderings from pairwise facts and small boolean expressions (D_task)."),
    Family("conversation", "conversation", "numeric", _make_conversation,
           "Short multi-turn chats ending in a calculation over the context (D_conv)."),
]
