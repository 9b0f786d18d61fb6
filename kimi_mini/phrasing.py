"""Training traces phrased the way people ask: many surface forms per task (questions, imperatives, "can you",
lower case, typos, numbers in words, thousands separators, units, percentages, dates, currency), several task
types per family, and the Python program a person would write for the question's *meaning* (run in the real
sandbox; the answer quotes what it printed). Also: Python-documentation lookups over the pydoc corpus that
`make run` imports here (web_search → browse → an answer quoting and citing the page), and plain chat answered
directly with the base model's own answers (`chat_distill.jsonl`, made by `python -m kimi_mini distill-chat`).

Nothing here is copied from `eval/hand.jsonl`: the modules it asks about are excluded from the pydoc tasks
(`EVAL_MODULES`), its fictional entities are the held-out quarter, and its chat prompts are not distilled."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from .data import Example, RunTool, _Trace

HERE = Path(__file__).resolve().parent
CHAT_DISTILL = HERE / "chat_distill.jsonl"

# ---------------------------------------------------------------- surface forms

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n: int) -> str:
    """An integer 0 <= n < 1e6 in English words ("three hundred and twelve")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + (" and " + words(rest) if rest else "")
    rest = n % 1000
    return words(n // 1000) + " thousand" + ((" " if rest >= 100 else " and ") + words(rest) if rest else "")


def show_num(rng: random.Random, n: int | float) -> str:
    """How a person might write a number: digits, thousands separators, or words for small integers."""
    if isinstance(n, float) and not n.is_integer():
        return f"{n:g}"
    n = int(n)
    r = rng.random()
    if n < 1000 and r < 0.2:
        return words(n)
    if n >= 1000 and r < 0.5:
        return f"{n:,}"
    if n < 100000 and r < 0.6 and n % 1000 == 0 and n:
        return words(n)
    return str(n)


def typo(rng: random.Random, text: str) -> str:
    """Lower case, dropped punctuation, a swapped or dropped letter in one word (most questions unchanged)."""
    r = rng.random()
    if r < 0.25:
        text = text.lower()
    if rng.random() < 0.25:
        text = text.rstrip("?.!")
    if rng.random() < 0.15:
        ws = text.split(" ")
        cands = [i for i, w in enumerate(ws) if w.isalpha() and len(w) > 4]
        if cands:
            i = rng.choice(cands)
            w = ws[i]
            j = rng.randrange(1, len(w) - 2)
            ws[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :] if rng.random() < 0.5 else w[:j] + w[j + 1 :]
            text = " ".join(ws)
    return text


def lead(rng: random.Random, core: str) -> str:
    """Wrap an imperative/noun phrase ("17 times 23") in one of many ways of asking."""
    forms = [
        "What is {c}?",
        "what's {c}",
        "Whats {c}?",
        "Calculate {c}.",
        "calculate {c}",
        "Can you calculate {c}?",
        "can u tell me {c}",
        "Could you compute {c} for me?",
        "Please compute {c}.",
        "I need {c}.",
        "{c}?",
        "{c} = ?",
        "Tell me {c}.",
        "quick q: {c}",
        "Help me figure out {c}.",
        "What do you get for {c}?",
        "Do you know {c}?",
        "Find {c}.",
    ]
    return rng.choice(forms).format(c=core)


# ---------------------------------------------------------------- one trace: python computes the meaning


def _python_trace(rng, run_tool, thinking, kind, tag, question, plan, code, answer_fmt):
    t = _Trace(typo(rng, question), thinking, run_tool)
    out = t.call(plan, "python", {"code": code})
    if not out.strip() or "Traceback" in out or out.startswith("Error"):
        return None
    value = out.strip().splitlines()[-1]
    t.answer(f"The program printed {value}.", answer_fmt.format(v=value))
    return Example(kind, f"v2:{tag}", t.messages, thinking, value, t.used)


def _fmt(x: float) -> str:
    return f"{x:g}"


def arithmetic(rng, run_tool, thinking):
    k = rng.choice(
        [
            "mul",
            "add",
            "sub",
            "div",
            "pct",
            "pow",
            "sq",
            "cube",
            "sqrt",
            "cbrt",
            "fact",
            "mod",
            "sum1n",
            "mixed",
            "many",
        ]
    )
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    A, B = show_num(rng, a), show_num(rng, b)
    if k == "mul":
        core = rng.choice(
            [f"{A} times {B}", f"{A} * {B}", f"{A} × {B}", f"{A} multiplied by {B}", f"{A}x{B}"]
        )
        q = rng.choice([lead(rng, core), f"Can you multiply {A} by {B}?", f"multiply {A} and {B}"])
        code, plan = f"print({a} * {b})", f"Multiply {a} by {b}."
    elif k == "add":
        core = rng.choice(
            [f"{A} plus {B}", f"{A} + {B}", f"{A} and {B} added together", f"the sum of {A} and {B}"]
        )
        q = rng.choice([lead(rng, core), f"add {A} and {B}", f"What's {A} + {B}?"])
        code, plan = f"print({a} + {b})", f"Add {a} and {b}."
    elif k == "sub":
        a, b = max(a, b), min(a, b)
        A, B = show_num(rng, a), show_num(rng, b)
        core = rng.choice([f"{A} minus {B}", f"{A} - {B}", f"{B} subtracted from {A}", f"{A} take away {B}"])
        q = lead(rng, core)
        code, plan = f"print({a} - {b})", f"Subtract {b} from {a}."
    elif k == "div":
        b = rng.choice([2, 4, 5, 8, 16, 25, 32, 64, 3, 7, 12])
        a = rng.randint(10, 99999)
        A, B = show_num(rng, a), show_num(rng, b)
        core = rng.choice([f"{A} divided by {B}", f"{A} / {B}", f"{A} ÷ {B}"])
        q = rng.choice([lead(rng, core), f"divide {A} by {B}", f"divide {A} by {B} please"])
        code, plan = f"print({a} / {b})", f"Divide {a} by {b}."
    elif k == "pct":
        p = rng.choice([5, 8, 10, 12, 12.5, 15, 17, 20, 25, 30, 33, 40, 45, 60, 75, 2.5])
        n = rng.randint(20, 20000)
        core = rng.choice([f"{_fmt(p)}% of {show_num(rng, n)}", f"{_fmt(p)} percent of {show_num(rng, n)}"])
        q = lead(rng, core)
        code, plan = f"print({_fmt(p)} / 100 * {n})", f"{_fmt(p)}% of {n} is {_fmt(p)}/100 times {n}."
    elif k == "pow":
        a, e = rng.randint(2, 15), rng.randint(3, 12)
        core = rng.choice(
            [f"{a} to the power of {e}", f"{a}^{e}", f"{a} raised to the {e}th power", f"{a}**{e}"]
        )
        q = lead(rng, core)
        code, plan = f"print({a} ** {e})", f"Raise {a} to the power {e}."
    elif k == "sq":
        a = rng.randint(11, 999)
        q = lead(rng, rng.choice([f"{show_num(rng, a)} squared", f"the square of {a}", f"{a}²"]))
        code, plan = f"print({a} ** 2)", f"Square {a}."
    elif k == "cube":
        a = rng.randint(2, 60)
        q = lead(rng, rng.choice([f"{show_num(rng, a)} cubed", f"the cube of {a}", f"{a}³"]))
        code, plan = f"print({a} ** 3)", f"Cube {a}."
    elif k == "sqrt":
        r = rng.randint(4, 300)
        n = r * r if rng.random() < 0.7 else rng.randint(2, 99999)
        q = lead(rng, rng.choice([f"the square root of {show_num(rng, n)}", f"sqrt({n})", f"√{n}"]))
        code, plan = f"import math\nprint(math.sqrt({n}))", f"Take the square root of {n}."
    elif k == "cbrt":
        r = rng.randint(2, 60)
        n = r**3
        q = lead(rng, rng.choice([f"the cube root of {n}", f"∛{n}"]))
        code, plan = f"print(round({n} ** (1 / 3), 6))", f"Take the cube root of {n}."
    elif k == "fact":
        n = rng.randint(3, 20)
        q = lead(rng, rng.choice([f"{n} factorial", f"{n}!", f"the factorial of {show_num(rng, n)}"]))
        code, plan = f"import math\nprint(math.factorial({n}))", f"Compute {n}!."
    elif k == "mod":
        b = rng.randint(3, 50)
        q = rng.choice(
            [
                f"What's the remainder when {A} is divided by {b}?",
                f"{a} mod {b}",
                f"what is left over if you divide {A} by {b}",
            ]
        )
        code, plan = f"print({a} % {b})", f"The remainder of {a} divided by {b}."
    elif k == "sum1n":
        n = rng.randint(10, 5000)
        q = rng.choice(
            [
                f"sum of 1 through {n}?",
                f"Add up all the numbers from 1 to {show_num(rng, n)}.",
                f"what is 1 + 2 + ... + {n}",
            ]
        )
        code, plan = f"print(sum(range(1, {n} + 1)))", f"Sum the integers from 1 to {n}."
    elif k == "mixed":
        c = rng.randint(2, 50)
        expr = rng.choice(
            [f"({a} + {b}) * {c}", f"{a} * {b} - {c}", f"{a} + {b} * {c}", f"({a} - {c}) / {b}"]
        )
        q = lead(rng, expr)
        code, plan = f"print({expr})", f"Evaluate {expr} (Python applies the usual precedence)."
    else:  # many terms
        xs = [rng.randint(10, 9999) for _ in range(rng.randint(3, 5))]
        shown = " + ".join(show_num(rng, x) for x in xs)
        q = rng.choice([lead(rng, shown), f"Please work out {shown}.", f"add {', '.join(map(str, xs))}"])
        code, plan = f"print({' + '.join(map(str, xs))})", "Add the terms."
    return _python_trace(rng, run_tool, thinking, "arithmetic", k, q, plan, code, "The answer is **{v}**.")


_UNITS = [  # (from, to, factor, plural forms)
    ("meters", "centimeters", 100),
    ("kilometers", "meters", 1000),
    ("miles", "kilometers", 1.609344),
    ("kilometers", "miles", 1 / 1.609344),
    ("kilograms", "grams", 1000),
    ("pounds", "kilograms", 0.45359237),
    ("kilograms", "pounds", 1 / 0.45359237),
    ("feet", "meters", 0.3048),
    ("inches", "centimeters", 2.54),
    ("hours", "minutes", 60),
    ("hours", "seconds", 3600),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("liters", "milliliters", 1000),
    ("gallons", "liters", 3.785411784),
    ("minutes", "seconds", 60),
]
_CURRENCIES = [
    ("USD", "EUR", "$"),
    ("EUR", "USD", "€"),
    ("GBP", "EUR", "£"),
    ("USD", "JPY", "$"),
    ("EUR", "CHF", "€"),
]
_MONTHS = "January February March April May June July August September October November December".split()


def _date(rng) -> tuple[str, str]:
    import datetime

    d = datetime.date(rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28))
    form = rng.choice(["{M} {d}, {y}", "{d} {M} {y}", "{y}-{m:02d}-{d:02d}", "{M} {d} {y}"])
    shown = form.format(M=_MONTHS[d.month - 1], d=d.day, y=d.year, m=d.month)
    return shown, f"date({d.year}, {d.month}, {d.day})"


def units_percent_dates(rng, run_tool, thinking):
    k = rng.choice(
        [
            "unit",
            "unit",
            "temp",
            "discount",
            "tax",
            "change",
            "frac",
            "days",
            "weekday",
            "age",
            "currency",
            "leap",
            "inverse",
        ]
    )
    if k == "unit":
        src, dst, f = rng.choice(_UNITS)
        x = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 100), 1)])
        xs = _fmt(x)
        q = rng.choice(
            [
                f"How many {dst} are in {xs} {src}?",
                f"convert {xs} {src} to {dst}",
                f"{xs} {src} in {dst}?",
                f"What is {xs} {src} in {dst}?",
                f"Can you turn {xs} {src} into {dst}?",
            ]
        )
        code = f"{src} = {xs}\nprint(round({src} * {f!r}, 4))"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "units",
            k,
            q,
            f"1 {src[:-1]} = {f:g} {dst}.",
            code,
            f"{xs} {src} is **{{v}}** {dst}.",
        )
    if k == "temp":
        x = rng.randint(-30, 220)
        if rng.random() < 0.5:
            q = rng.choice(
                [f"what is {x} fahrenheit in celsius", f"Convert {x}°F to Celsius.", f"{x} F to C?"]
            )
            code = f"f = {x}\nprint(round((f - 32) * 5 / 9, 2))"
            return _python_trace(
                rng,
                run_tool,
                thinking,
                "units",
                k,
                q,
                "C = (F - 32) * 5/9.",
                code,
                f"{x} °F is **{{v}} °C**.",
            )
        x = rng.randint(-40, 100)
        q = rng.choice([f"What is {x} degrees Celsius in Fahrenheit?", f"convert {x}C to F", f"{x}°C in °F"])
        code = f"c = {x}\nprint(round(c * 9 / 5 + 32, 2))"
        return _python_trace(
            rng, run_tool, thinking, "units", k, q, "F = C * 9/5 + 32.", code, f"{x} °C is **{{v}} °F**."
        )
    if k == "discount":
        p, price = rng.choice([10, 15, 20, 25, 30, 40, 50]), rng.randint(10, 900)
        cur = rng.choice(["$", "€", "£"])
        q = rng.choice(
            [
                f"What is {p}% off a price of {cur}{price}?",
                f"a {cur}{price} item is {p} percent off. what do I pay?",
                f"How much is {cur}{price} after a {p}% discount?",
            ]
        )
        code = f"price = {price}\ndiscount = {p} / 100\nprint(round(price * (1 - discount), 2))"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "units",
            k,
            q,
            "Price times (1 - discount).",
            code,
            f"You pay **{cur}{{v}}**.",
        )
    if k == "tax":
        p, amount = rng.choice([5, 7, 8, 10, 19, 20, 21]), rng.randint(10, 3000)
        cur = rng.choice(["$", "€", "£"])
        q = rng.choice(
            [f"what's {p}% sales tax on {cur}{amount}", f"How much is {p} percent VAT on {cur}{amount}?"]
        )
        code = f"amount = {amount}\nprint(round(amount * {p} / 100, 2))"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "units",
            k,
            q,
            "Tax = amount times rate.",
            code,
            f"The tax is **{cur}{{v}}**.",
        )
    if k == "change":
        old = rng.randint(20, 5000)
        new = max(1, old + rng.randint(-old // 2, old // 2))
        q = rng.choice(
            [
                f"It went from {old} to {new}. What's the change in percent?",
                f"The price was ${old} and now it is ${new}. By what percent did it change?",
                f"my salary went from {old} to {new}, what's that in percent?",
            ]
        )
        code = f"old, new = {old}, {new}\nprint(round((new - old) / old * 100, 2))"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "units",
            k,
            q,
            "Percent change = (new - old) / old * 100.",
            code,
            "The change is **{v}%**.",
        )
    if k == "frac":
        a, b = rng.randint(1, 19), rng.randint(2, 40)
        q = rng.choice(
            [
                f"What is {a}/{b} as a percentage?",
                f"{a} out of {b} is what percent?",
                f"express {a} over {b} as a percent",
            ]
        )
        code = f"print(round({a} / {b} * 100, 2))"
        return _python_trace(
            rng, run_tool, thinking, "units", k, q, "Fraction times 100.", code, "That is **{v}%**."
        )
    if k == "days":
        (s1, c1), (s2, c2) = _date(rng), _date(rng)
        q = rng.choice(
            [
                f"How many days are there between {s1} and {s2}?",
                f"days from {s1} to {s2}?",
                f"how long is it from {s1} until {s2}, in days",
            ]
        )
        code = f"from datetime import date\nprint(abs(({c2} - {c1}).days))"
        return _python_trace(
            rng, run_tool, thinking, "dates", k, q, "Subtract the dates with datetime.", code, "**{v}** days."
        )
    if k == "weekday":
        s, c = _date(rng)
        q = rng.choice(
            [f"What day of the week was {s}?", f"which weekday is {s}", f"{s} - what day is that?"]
        )
        code = f"from datetime import date\nprint({c}.strftime('%A'))"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "dates",
            k,
            q,
            "datetime knows the weekday.",
            code,
            f"{s} is a **{{v}}**.",
        )
    if k == "age":
        (s1, c1), (s2, c2) = sorted([_date(rng), _date(rng)], key=lambda d: d[1])
        q = rng.choice(
            [
                f"I was born on {s1}. How old was I on {s2}?",
                f"someone born {s1}, how old are they on {s2} in whole years",
            ]
        )
        code = (
            f"from datetime import date\nborn, day = {c1}, {c2}\n"
            "print(day.year - born.year - ((day.month, day.day) < (born.month, born.day)))"
        )
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "dates",
            k,
            q,
            "Whole years between the dates.",
            code,
            "**{v}** years old.",
        )
    if k == "currency":
        a, b, sym = rng.choice(_CURRENCIES)
        rate = round(rng.uniform(0.5, 1.6) if b != "JPY" else rng.uniform(100, 160), 2)
        x = rng.randint(5, 5000)
        q = rng.choice(
            [
                f"what's {x} {a} in {b} if 1 {a} is {rate} {b}",
                f"Convert {sym}{x} to {b} at a rate of {rate}.",
                f"{x} {a} to {b}, rate {rate}?",
            ]
        )
        code = f"print(round({x} * {rate}, 2))"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "units",
            k,
            q,
            "Amount times the rate.",
            code,
            f"{x} {a} is **{{v}} {b}**.",
        )
    if k == "leap":
        y = rng.randint(1800, 2100)
        q = rng.choice(
            [f"Is {y} a leap year?", f"how many days were in the year {y}", f"was {y} a leap year"]
        )
        code = f"import calendar\nprint(366 if calendar.isleap({y}) else 365)"
        return _python_trace(
            rng,
            run_tool,
            thinking,
            "dates",
            k,
            q,
            "Check with calendar.isleap.",
            code,
            f"The year {y} has **{{v}}** days.",
        )
    # inverse unit: "how many weeks is 91 days"
    src, dst, f = rng.choice(
        [
            ("days", "weeks", 7),
            ("minutes", "hours", 60),
            ("centimeters", "meters", 100),
            ("inches", "feet", 12),
            ("grams", "kilograms", 1000),
            ("months", "years", 12),
        ]
    )
    x = rng.randint(1, 2000)
    q = rng.choice(
        [f"how many {dst} is {x} {src}", f"Convert {x} {src} to {dst}.", f"{x} {src} = how many {dst}?"]
    )
    code = f"print(round({x} / {f}, 4))"
    return _python_trace(
        rng,
        run_tool,
        thinking,
        "units",
        "inverse",
        q,
        f"{f} {src} make one {dst[:-1]}.",
        code,
        f"{x} {src} is **{{v}}** {dst}.",
    )


_THINGS = [
    "apples",
    "books",
    "chairs",
    "cookies",
    "marbles",
    "stickers",
    "pencils",
    "eggs",
    "tickets",
    "bottles",
]
_NAMES = ["Sam", "Maria", "Li", "Omar", "Priya", "Jake", "Noor", "Eva", "Ken", "Zoe"]


def word_problems(rng, run_tool, thinking):
    k = rng.randrange(14)
    n, thing, cur = rng.choice(_NAMES), rng.choice(_THINGS), rng.choice(["$", "€", "£"])
    if k == 0:
        q_, p, e = rng.randint(2, 9), round(rng.uniform(0.5, 20), 2), round(rng.uniform(0.5, 9), 2)
        q = f"I bought {q_} {thing} at {cur}{p:.2f} each and a bag for {cur}{e:.2f}. How much did I spend?"
        code = f"quantity, price, extra = {q_}, {p}, {e}\nprint(round(quantity * price + extra, 2))"
        unit = f"{cur}{{v}}"
    elif k == 1:
        s, h = rng.randint(20, 130), rng.choice([1.5, 2, 2.5, 3, 4, 0.5, 6])
        q = rng.choice(
            [
                f"A car drives {s} km/h for {h} hours. How far does it go?",
                f"if I cycle at {s} km per hour for {h} hours how far do I get",
            ]
        )
        code = f"speed, hours = {s}, {h}\nprint(speed * hours)"
        unit = "{v} km"
    elif k == 2:
        g = rng.randint(2, 9)
        total = g * rng.randint(2, 30)
        q = rng.choice(
            [
                f"There are {total} people and they sit in groups of {g}. How many groups?",
                f"{total} {thing} shared equally by {g} kids, how many each?",
            ]
        )
        code = f"print({total} // {g})"
        unit = "{v}"
    elif k == 3:
        per, people, each = rng.choice([6, 8, 10, 12]), rng.randint(3, 60), rng.randint(1, 4)
        q = f"One pizza has {per} slices. How many pizzas do we need for {people} people who eat {each} slices each?"
        code = f"import math\nprint(math.ceil({people} * {each} / {per}))"
        unit = "{v} pizzas"
    elif k == 4:
        d = rng.choice([2, 3, 4, 5])
        total = d * rng.randint(3, 40)
        frac = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}[d]
        q = f"{n} has {total} {thing} and gives {frac} of them away. How many are left?"
        code = f"total = {total}\nprint(total - total // {d})"
        unit = "{v} " + thing
    elif k == 5:
        amt, base, want = (
            rng.choice([100, 150, 200, 250, 300, 500]),
            rng.choice([2, 4, 6]),
            rng.randint(1, 12),
        )
        q = f"A recipe needs {amt} g of sugar for {base} people. How much for {want} people?"
        code = f"print({amt} / {base} * {want})"
        unit = "{v} g"
    elif k == 6:
        drop, hours = rng.randint(3, 20), rng.randint(1, 5)
        q = f"The battery loses {drop}% every hour. Starting full, what's left after {hours} hours?"
        code = f"print(100 - {drop} * {hours})"
        unit = "{v}%"
    elif k == 7:
        cap, rate = rng.randint(100, 5000), rng.randint(5, 120)
        q = f"A tank holds {cap} liters and fills at {rate} liters per minute. How many minutes to fill it?"
        code = f"print(round({cap} / {rate}, 2))"
        unit = "{v} minutes"
    elif k == 8:
        price, num = rng.randint(2, 99), rng.randint(2, 40)
        q = rng.choice(
            [
                f"one ticket is {show_num(rng, price)} dollars, what do {num} tickets cost?",
                f"{num} {thing} at {cur}{price} apiece, total?",
            ]
        )
        code = f"print({price} * {num})"
        unit = "{v}"
    elif k == 9:
        child, mult = rng.randint(2, 20), rng.randint(2, 5)
        q = f"{n} is {mult} times as old as her daughter, who is {child}. How old is {n}?"
        code = f"print({mult} * {child})"
        unit = "{v} years"
    elif k == 10:
        bill, friends = rng.randint(20, 900), rng.randint(2, 8)
        q = rng.choice(
            [
                f"We split a bill of {cur}{bill} between {friends} friends. How much each?",
                f"{friends} of us share a {cur}{bill} dinner bill evenly, what does each pay",
            ]
        )
        code = f"print(round({bill} / {friends}, 2))"
        unit = f"{cur}{{v}}"
    elif k == 11:
        w, h = rng.randint(2, 40), rng.choice([3, 4.5, 7.5, 10, 12])
        q = f"A room is {w} m long and {h} m wide. What is its area?"
        code = f"print({w} * {h})"
        unit = "{v} m²"
    elif k == 12:
        h1, m1 = rng.randint(5, 12), rng.choice([0, 10, 15, 20, 30, 45, 50])
        h2, m2 = h1 + rng.randint(1, 8), rng.choice([0, 5, 15, 25, 40])
        q = f"The bus leaves at {h1}:{m1:02d} and arrives at {h2}:{m2:02d}. How many minutes is the trip?"
        code = f"print(({h2} * 60 + {m2}) - ({h1} * 60 + {m1}))"
        unit = "{v} minutes"
    else:
        pages, per = rng.randint(100, 900), rng.randint(10, 60)
        q = f"A book has {pages} pages. If I read {per} pages a day, how many days do I need?"
        code = f"import math\nprint(math.ceil({pages} / {per}))"
        unit = "{v} days"
    return _python_trace(
        rng,
        run_tool,
        thinking,
        "word_problem",
        f"w{k}",
        q,
        "Set up the computation from the story.",
        code,
        "The answer is **" + unit + "**.",
    )


_STATS = {
    "mean": (
        ["the average of", "the mean of", "the avg of"],
        "import statistics\nprint(statistics.mean(xs))",
        "The average is",
    ),
    "median": (["the median of"], "import statistics\nprint(statistics.median(xs))", "The median is"),
    "mode": (
        ["the mode of", "the most common number in"],
        "import statistics\nprint(statistics.mode(xs))",
        "The mode is",
    ),
    "max": (
        ["the largest number in", "the biggest value in", "the max of"],
        "print(max(xs))",
        "The largest is",
    ),
    "min": (
        ["the smallest number in", "the minimum of", "the lowest of"],
        "print(min(xs))",
        "The smallest is",
    ),
    "sum": (["the sum of", "the total of"], "print(sum(xs))", "The total is"),
    "range": (["the range of"], "print(max(xs) - min(xs))", "The range is"),
    "pstdev": (
        ["the population standard deviation of"],
        "import statistics\nprint(round(statistics.pstdev(xs), 4))",
        "The standard deviation is",
    ),
    "count": (["how many numbers are in"], "print(len(xs))", "There are"),
    "asc": (["these sorted from lowest to highest:"], "print(', '.join(map(str, sorted(xs))))", "Sorted:"),
    "desc": (
        ["these in descending order:"],
        "print(', '.join(map(str, sorted(xs, reverse=True))))",
        "In descending order:",
    ),
    "product": (["the product of"], "import math\nprint(math.prod(xs))", "The product is"),
    "even": (["how many even numbers are in"], "print(sum(1 for x in xs if x % 2 == 0))", "Even numbers:"),
    "squares": (["the sum of the squares of"], "print(sum(x * x for x in xs))", "The sum of squares is"),
    "second": (["the second largest number in"], "print(sorted(set(xs))[-2])", "The second largest is"),
}


def list_statistics(rng, run_tool, thinking):
    op = rng.choice(sorted(_STATS))
    phrases, body, lead_ = _STATS[op]
    n = rng.randint(3, 10)
    hi = 12 if op == "product" else rng.choice([20, 100, 250, 5000])
    xs = [rng.randint(1, hi) for _ in range(n)]
    if op == "mode":
        xs += [rng.choice(xs)] * 2
        rng.shuffle(xs)
    sep = rng.choice([", ", " ", "; ", ", "])
    shown = sep.join(map(str, xs))
    phrase = rng.choice(phrases)
    if op in ("asc", "desc", "count", "even"):  # not a noun phrase: "sort these ...", "how many ..."
        verb = {"asc": "Sort these from lowest to highest:", "desc": "Put these in descending order:"}
        q = rng.choice(
            [
                f"{verb.get(op, phrase[0].upper() + phrase[1:])} {shown}",
                f"can you tell me {phrase} {shown}",
                f"{phrase} {shown}?",
            ]
        )
        code = f"xs = {xs}\n{body}"
        plan = "Put the numbers in a list and let Python do it."
        return _python_trace(rng, run_tool, thinking, "data", op, q, plan, code, f"{lead_} **{{v}}**.")
    q = rng.choice(
        [
            f"What's {phrase} {shown}?",
            f"{phrase[0].upper() + phrase[1:]} {shown}?",
            f"Can you find {phrase} {shown}",
            f"my numbers are {shown}. what is {phrase} them?",
            f"Give me {phrase} this list: {shown}",
        ]
    )
    code = f"xs = {xs}\n{body}"
    return _python_trace(
        rng,
        run_tool,
        thinking,
        "data",
        op,
        q,
        f"Put the numbers in a list and compute {phrase.rstrip(':')} them.",
        code,
        f"{lead_} **{{v}}**.",
    )


# ---------------------------------------------------------------- the pydoc corpus

# Modules the hand-written eval asks about: never the subject of a training lookup.
EVAL_MODULES = {
    "math", "json", "statistics", "textwrap", "heapq", "bisect", "string", "shlex", "copy", "glob", "functools",
    "fractions", "zlib", "difflib", "colorsys", "base64", "uuid", "operator", "keyword",
}  # fmt: skip
_FUNC = re.compile(r"^    ([a-z_][a-z0-9_]*)\((.*?)\)\n        (\S[^\n]*)", re.M)


def pydoc_pages(names: list[str] | None = None) -> list[dict]:
    """The pages `corpus.services.import_pydoc` imports (url, title, text), built by the same code."""
    from corpus import pydoc_text

    pages = []
    for name in names or pydoc_text.module_names():
        try:
            text = pydoc_text.render(name)
        except Exception:  # noqa: BLE001 - a module that cannot be imported on this platform, as import_pydoc
            continue
        pages.append({"url": pydoc_text.URL.format(name), "title": name, "text": text})
    return pages


def pydoc_facts(pages: list[dict], max_chars: int = 8000) -> list[dict]:
    """Module functions whose signature and first docstring line are inside what `browse` shows."""
    facts = []
    for p in pages:
        if p["title"] in EVAL_MODULES:
            continue
        head = p["text"][:max_chars]
        funcs = head.find("\nFUNCTIONS\n")
        if funcs < 0:
            continue
        for m in _FUNC.finditer(head, funcs):
            fn, sig, doc = m.groups()
            if fn.startswith("_") or len(doc) < 12 or len(doc) > 140 or doc.startswith(("Same as", "See ")):
                continue
            facts.append({"module": p["title"], "url": p["url"], "func": fn, "sig": sig, "doc": doc.rstrip()})
    return facts


def pydoc_lookup(rng, run_tool, thinking, facts):
    f = rng.choice(facts)
    mod, fn, doc = f["module"], f["func"], f["doc"]
    dotted = f"{mod}.{fn}"
    desc = doc[0].lower() + doc[1:].rstrip(".")
    if rng.random() < 0.5:
        q = rng.choice(
            [
                f"What does {dotted} do?",
                f"what does {fn} in python's {mod} module do",
                f"Explain {dotted}() according to the Python docs.",
                f"In Python, what is {dotted} for?",
                f"python {dotted} - what does it return?",
                f"Can you look up {dotted} in the documentation?",
            ]
        )
        answer = f"According to the Python documentation, `{dotted}({f['sig']})`: {doc} (source: [{mod}]({f['url']}))"
        expected = fn
    else:
        q = rng.choice(
            [
                f"Which function in Python's {mod} module does this: {desc}?",
                f"in the {mod} module, what function should I use to {desc[0].lower() + desc[1:]}?",
                f'Python {mod}: which function is described as "{doc.rstrip(".")}"?',
            ]
        )
        answer = f"The function is `{dotted}({f['sig']})`: {doc} (source: [{mod}]({f['url']}))"
        expected = fn
    t = _Trace(typo(rng, q), thinking, run_tool)
    query = rng.choice([f"{mod} {fn}", f"python {mod} {fn}", f"{mod} module"])
    results = t.call(
        f"This is in the Python documentation of {mod}. Let me search for it.", "web_search", {"query": query}
    )
    urls = re.findall(r"https?://[^\s\"]+", results)
    url = f["url"] if f["url"] in urls or not urls else f["url"]
    page = t.call(f"The page for the {mod} module is {url}. Let me open it.", "browse", {"url": url})
    if f"{fn}(" not in page:
        return None
    t.answer(f"The page documents {fn}({f['sig']}): {doc}", answer)
    return Example(
        "python_docs",
        f"v2:pydoc:{'what' if expected == fn else 'which'}",
        t.messages,
        thinking,
        expected,
        t.used,
    )


class PydocCorpus:
    """The pydoc pages as the agent's `Corpus`, searched like Postgres's `websearch` query does it (every
    query word must occur; stems approximated by prefix), ranked by how often the words occur, title first."""

    def __init__(self, pages: list[dict], extra: list[dict] = ()):
        self.docs = [*pages, *extra]
        self.by_url = {d["url"]: d for d in self.docs}
        self.low = [(d["title"].lower(), d["text"].lower()) for d in self.docs]

    def search(self, query: str, limit: int):
        from agent.corpus import SearchHit

        stop = {"the", "a", "an", "of", "in", "is", "what", "python", "does", "how", "to", "for"}
        wanted = [w for w in re.findall(r"\w+", query.lower()) if w not in stop] or re.findall(
            r"\w+", query.lower()
        )
        scored = []
        for i, (title, text) in enumerate(self.low):
            if all(w in title or w in text for w in wanted):
                score = sum(3 * (w == title) + text.count(w) / (1 + len(text) / 4000) for w in wanted)
                scored.append((-score, i))
        scored.sort()
        hits = []
        for _, i in scored[:limit]:
            d = self.docs[i]
            t = d["text"]
            j = max(0, t.lower().find(wanted[0]) - 60) if wanted else 0
            hits.append(SearchHit(d["title"], d["url"], " ".join(t[j : j + 200].split())))
        return hits

    def page(self, url: str):
        from agent.corpus import Page

        d = self.by_url.get(url)
        return Page(d["url"], d["title"], d["text"]) if d else None


def corpus_run_tool(corpus, max_chars: int = 8000) -> RunTool:
    """The agent's real tools with `corpus` as the local search backend and browse source."""
    from agent.tools import ToolContext, ToolError, get_tool
    from agent.tools.base import SearchSettings

    def run(name: str, args: dict) -> str:
        ctx = ToolContext(
            timeout=30.0, corpus=corpus, search=SearchSettings(backend="local"), max_chars=max_chars
        )
        try:
            return get_tool(name).run(args, ctx).text
        except ToolError as exc:
            return f"Error: {exc}"

    return run


# ---------------------------------------------------------------- fictional corpus, people's phrasing


def fictional_lookup(rng, run_tool, thinking, ents):
    doc = rng.choice(ents)
    facts = doc["facts"]
    name = facts["name"]
    attr = rng.choice([a for a in ("year", "founder", "population", "employees") if a in facts])
    value = facts[attr]
    forms = {
        "year": [
            f"when was {name} founded",
            f"{name} - founding year?",
            f"In which year was {name} set up?",
            f"how old is {name}, when did it start?",
        ],
        "founder": [
            f"who started {name}?",
            f"Can you find out who founded {name}?",
            f"{name} founder?",
            f"tell me who set up {name}",
        ],
        "population": [
            f"how many people live in {name}",
            f"{name} population?",
            f"What's the population of {name}, roughly?",
        ],
        "employees": [
            f"how many ppl work at {name}",
            f"What is the headcount of {name}?",
            f"{name}: number of employees?",
            f"how big is {name} in staff",
        ],
    }[attr]
    t = _Trace(typo(rng, rng.choice(forms)), thinking, run_tool)
    results = t.call(f"I don't know {name}; let me search for it.", "web_search", {"query": name})
    urls = re.findall(r"https?://[^\s\"]+", results)
    url = doc["url"] if doc["url"] in urls or not urls else doc["url"]
    page = t.call(f"The result {url} is the page about {name}. Let me open it.", "browse", {"url": url})
    if str(value) not in page:
        return None
    lead_ = {
        "year": f"{name} was founded in **{value}**",
        "founder": f"{name} was founded by **{value}**",
        "population": f"{name} has a population of **{value}**",
        "employees": f"{name} has **{value}** employees",
    }[attr]
    t.answer(f"The page says: {attr} = {value}.", f"{lead_} (source: [{doc['title']}]({doc['url']})).")
    return Example("factual", f"v2:fict:{attr}", t.messages, thinking, str(value), t.used)


# ---------------------------------------------------------------- plain chat, the base model's own answers


def load_chat_distill(path: Path = CHAT_DISTILL) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chat(rng, run_tool, thinking, pairs):
    p = rng.choice(pairs)
    t = _Trace(typo(rng, p["prompt"]) if rng.random() < 0.3 else p["prompt"], thinking, run_tool)
    t.answer("This is a general question; I can answer it directly without tools.", p["answer"])
    return Example("chat", "v2:chat", t.messages, thinking, None, t.used)


def generate_v2(
    n: int,
    run_tool_for,
    seed: int,
    ents: list[dict],
    thinking_off_frac=0.25,
    pydoc: list[dict] | None = None,
    pydoc_chars: int = 8000,
):
    """`n` v2 training examples. `run_tool_for(corpus_kind)` gives the tool runner for 'fictional' or
    'pydoc' (python runs the same everywhere)."""
    rng = random.Random(f"v2:{seed}")
    facts = pydoc_facts(pydoc, pydoc_chars) if pydoc else []
    pairs = load_chat_distill()
    fict, pyd = run_tool_for("fictional"), run_tool_for("pydoc")
    makers = [
        (0.17, lambda th: arithmetic(rng, fict, th)),
        (0.15, lambda th: units_percent_dates(rng, fict, th)),
        (0.13, lambda th: word_problems(rng, fict, th)),
        (0.13, lambda th: list_statistics(rng, fict, th)),
        (0.14 if facts else 0, lambda th: pydoc_lookup(rng, pyd, th, facts)),
        (0.12, lambda th: fictional_lookup(rng, fict, th, ents)),
        (0.16 if pairs else 0, lambda th: chat(rng, fict, th, pairs)),
    ]
    weights = [w for w, _ in makers]
    out = []
    while len(out) < n:
        make = rng.choices([m for _, m in makers], weights)[0]
        ex = make(rng.random() >= thinking_off_frac)
        if ex is not None and not ex.messages[-1]["content"].startswith("Error"):
            out.append(ex)
    return out


# Everyday prompts whose answers the base model itself writes (`distill_chat`); where the answer is checkable,
# the accepted substrings filter out its mistakes. None of them is a question of eval/hand.jsonl.
DISTILL_PROMPTS: list[tuple[str, list[str]]] = [
    *[
        (q.format(c=c), [a])
        for c, a in [
            ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Egypt", "Cairo"), ("Brazil", "Bras"),
            ("Russia", "Moscow"), ("China", "Beijing"), ("India", "Delhi"), ("Kenya", "Nairobi"),
            ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
            ("Poland", "Warsaw"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Turkey", "Ankara"),
            ("the United Kingdom", "London"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Peru", "Lima"),
        ]
        for q in ["What is the capital of {c}?"]
    ],
    ("what's the capital city of Canada", ["Ottawa"]),
    ("Name the capital of Egypt.", ["Cairo"]),
    ("How many legs does an ant have?", ["6", "six"]),
    ("How many legs does a cow have?", ["4", "four"]),
    ("how many arms does an octopus have", ["8", "eight"]),
    ("How many legs does a duck have?", ["2", "two"]),
    ("How many legs does a horse have?", ["4", "four"]),
    ("how many legs do bees have", ["6", "six"]),
    ("How do you say 'goodbye' in Spanish?", ["adi"]),
    ("What is the French word for water?", ["eau"]),
    ("Translate 'dog' into German.", ["Hund"]),
    ("What is 'house' in Spanish?", ["casa"]),
    ("How do you say 'bread' in French?", ["pain"]),
    ("What does 'danke' mean?", ["thank"]),
    ("What does 'bonjour' mean in English?", ["hello", "good morning", "good day"]),
    ("What is the boiling point of water in Celsius?", ["100"]),
    ("How many hours are in a day?", ["24"]),
    ("How many months are in a year?", ["12", "twelve"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("How many sides does a hexagon have?", ["6", "six"]),
    ("What color is grass?", ["green"]),
    ("What do bees make?", ["honey"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the tallest mountain in the world?", ["Everest"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "Vinci"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("What is H2O?", ["water"]),
    ("How many planets are in our solar system?", ["8", "eight"]),
    ("What is the closest star to Earth?", ["Sun"]),
    ("What is the opposite of big?", ["small", "little"]),
    ("What is the opposite of 'happy'?", ["sad", "unhappy"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What do cows drink?", ["water"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("What language is spoken in Brazil?", ["Portuguese"]),
    ("Which is the longest river in Africa?", ["Nile"]),
    ("Who was the first person to walk on the moon?", ["Armstrong"]),
    ("What season comes after winter?", ["spring"]),
    ("What is the main ingredient of guacamole?", ["avocado"]),
    ("What is a verb?", []),
    ("What is an adjective?", []),
    ("Explain gravity in simple words.", []),
    ("What is democracy?", []),
    ("What is a mammal?", []),
    ("What is evaporation?", []),
    ("What is an atom?", []),
    ("What is a synonym?", []),
    ("Give me a tip for sleeping better.", []),
    ("How can I stay focused while studying?", []),
    ("Suggest a name for a pet goldfish.", []),
    ("Write a haiku about autumn.", []),
    ("Give me three ideas for a healthy breakfast.", []),
    ("What should I pack for a beach trip?", []),
    ("Why is the sky blue?", []),
    ("Why do leaves change color in the fall?", []),
    ("What is the difference between weather and climate?", []),
    ("good evening!", []),
    ("thanks a lot, that helped", []),
    ("Can you recommend a good habit to start this year?", []),
    ("Tell me a fun fact about dolphins.", []),
    ("What is a rainbow?", []),
    ("How do plants drink water?", []),
    ("What's a good way to learn a new language?", []),
]  # fmt: skip


def distill_chat(out: Path = CHAT_DISTILL, max_new: int = 120, concurrency: int = 16) -> int:
    """The base SmolLM2-135M-Instruct answers DISTILL_PROMPTS (greedy, its own chat template, through our
    engine); kept: answers that finished, pass the prompt's check, and do not name the base model."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from inference.engine.llm_engine import LLMEngine, generate
    from inference.engine.loader import load_model, smollm2_gguf_path
    from inference.engine.sequence import SamplingParams
    from inference.server.chat_templates import render_chat

    loaded = load_model(smollm2_gguf_path(), torch.bfloat16)
    engine = LLMEngine(loaded, kv_cache_tokens=16384)
    tok = loaded.tokenizer
    stop = set(tok.stop_ids)

    def one(item):
        prompt, accepted = item
        text = render_chat(
            tok.chat_template, [{"role": "user", "content": prompt}], add_generation_prompt=True
        )
        ids = generate(engine, tok.tokenizer.encode(text, add_special_tokens=False).ids,
                       SamplingParams(temperature=0, max_tokens=max_new), timeout=3600)  # fmt: skip
        finished = bool(ids) and (ids[-1] in stop or len(ids) < max_new)
        answer = tok.tokenizer.decode(ids, skip_special_tokens=True).strip()
        ok = finished and answer and not re.search(r"SmolLM|Hugging ?Face", answer)
        if accepted:
            ok = ok and any(a.lower() in answer.lower() for a in accepted)
        return {"prompt": prompt, "answer": answer, "kept": bool(ok)}

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            rows = list(pool.map(one, DISTILL_PROMPTS))
    finally:
        engine.shutdown()
    kept = [r for r in rows if r["kept"]]
    out.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) + "\n" for r in kept))
    return len(kept)


# What `browse` shows of a pydoc page in training traces (the agent shows 8000): a page of 8000 characters
# is ~2500 tokens, and the bottom layers' cache and every step pay for it quadratically; the first 3000
# characters still hold 205 documented functions of 43 modules.
PYDOC_TRAIN_CHARS = 3000


def training_traces(
    n: int, seed: int, corpus: list[dict], v1_frac: float = 0.2, files_frac: float = 0.0
) -> list[Example]:
    """The v2 training mix: a `v1_frac` share of the original template traces (`data.generate`, training
    templates only), a `files_frac` share reading attached files (`kimi_mini.files`, the v3 mix), the rest
    `generate_v2`; tools are the agent's own (`python` in the sandbox, search and browse over the
    fictional pages or over the in-memory pydoc corpus, the file tools over the extracted documents)."""
    from .data import agent_system_prompt, generate
    from .tools import agent_run_tool

    fictional = agent_run_tool(corpus)
    pages = pydoc_pages()
    pyd = corpus_run_tool(PydocCorpus(pages), max_chars=PYDOC_TRAIN_CHARS)
    n_v1, n_files = int(n * v1_frac), int(n * files_frac)
    v1 = generate(n_v1, "train", fictional, corpus, seed)
    _Trace.system = agent_system_prompt()
    ents = [d for i, d in enumerate(corpus) if i % 4 != 3]  # the held-out quarter stays out of training
    v2 = generate_v2(
        n - n_v1 - n_files,
        lambda kind: pyd if kind == "pydoc" else fictional,
        seed,
        ents,
        pydoc=pages,
        pydoc_chars=PYDOC_TRAIN_CHARS,
    )
    out = v1 + v2
    if n_files:
        from .files import file_traces

        out += file_traces(n_files, seed, fictional)
    random.Random(f"mix:{seed}").shuffle(out)
    return out
