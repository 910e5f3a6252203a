"""Synthetic production traffic for the demo, tests and benchmarks: deterministic for a seed.

Conversations span everyday topics, and some carry a planted failure mode with the feedback a real user would
leave (thumbs down, a regenerate, a correction). The truth sits in `metadata.demo_truth` so that tests and the
simulated annotators can check what the loop finds; detectors never read it. Every text here is written for Curate.
"""
from __future__ import annotations

import datetime as dt
import gzip
import random
from pathlib import Path
from typing import Iterator

import orjson

FAILURE_MODES = ("wrong_arithmetic", "refusal", "truncated", "off_topic", "broken_code", "ignored_instruction")

CITIES = ["Lisbon", "Kyoto", "Montreal", "Nairobi", "Oslo", "Lima", "Hanoi", "Seville", "Tallinn", "Porto", "Quito", "Krakow"]
FOODS = ["lentil soup", "banana bread", "vegetable curry", "focaccia", "pad thai", "shakshuka", "risotto", "granola", "falafel"]
PLANTS = ["tomatoes", "basil", "lavender", "a lemon tree", "orchids", "succulents", "strawberries", "roses", "chili peppers"]
TASKS = ["reverse a string", "count words in a file", "merge two sorted lists", "check if a number is prime",
         "read a CSV file", "remove duplicates from a list", "compute a factorial", "parse a date string", "flatten a nested list"]
LANGS = ["Python", "JavaScript", "Go", "Rust"]
EVENTS = ["the fall of the Berlin Wall", "the first Moon landing", "the invention of the printing press",
          "the building of the Panama Canal", "the Meiji Restoration", "the signing of the Magna Carta"]
RECIPIENTS = ["my landlord", "a hiring manager", "my team", "a customer", "my professor", "a supplier"]
PURPOSES = ["ask for a deadline extension", "follow up after an interview", "report a broken heater",
            "announce a schedule change", "apologise for a late delivery", "request a refund"]
EXERCISES = ["stretching routine", "beginner running plan", "core workout", "desk exercise break", "yoga sequence"]
MONEY = ["build an emergency fund", "pay off a credit card", "start a monthly budget", "save for a bicycle", "track spending"]

TOPICS = {
    "arithmetic": 0.14, "cooking": 0.12, "coding": 0.16, "travel": 0.11, "email": 0.11,
    "history": 0.09, "fitness": 0.09, "gardening": 0.09, "finance": 0.09,
}
# the failure modes each topic is prone to, with their rates; every topic also goes off-topic now and then
FAILURES = {
    "arithmetic": {"wrong_arithmetic": 0.40}, "coding": {"broken_code": 0.35}, "email": {"ignored_instruction": 0.35},
    "fitness": {"refusal": 0.30}, "travel": {"truncated": 0.25}, "cooking": {"truncated": 0.05},
    "history": {}, "gardening": {}, "finance": {"refusal": 0.08},
}
OFF_TOPIC = 0.03


# Each topic maker returns (question, good answer, the answer given, the true result for corrections).
def _arithmetic(r: random.Random, fail: str | None) -> tuple[str, str, str, str]:
    a, b = r.randint(12, 999), r.randint(3, 99)
    op, sym, result = r.choice([("multiply", "×", a * b), ("add", "+", a + b), ("subtract", "−", a - b)])
    ask = r.choice([f"What is {a} {sym} {b}?", f"Can you {op} {a} and {b} for me?", f"Quick maths: {a} {sym} {b} = ?",
                    f"I need to {op} {a} and {b}, what do I get?"])
    template = r.choice(["{a} {sym} {b} = {v}.", "The answer is {v}.", "That comes to {v}."])
    wrong = result + r.choice([-10, -3, -1, 1, 2, 7, 100])
    good = template.format(a=a, sym=sym, b=b, v=result)
    given = template.format(a=a, sym=sym, b=b, v=wrong) if fail == "wrong_arithmetic" else good
    return ask, good, given, str(result)


def _coding(r: random.Random, fail: str | None) -> tuple[str, str, str, str]:
    task, lang = r.choice(TASKS), r.choice(LANGS)
    ask = r.choice([f"Write a {lang} function to {task}.", f"How do I {task} in {lang}?", f"Show me {lang} code that can {task}."])
    name = task.split()[0] + "_" + task.split()[-1]
    good = f"def {name}(data):\n    result = process(data)\n    return result"
    broken = f"def {name}(data)\n    result = process(data\n    retrun result"
    wrap = lambda body: f"Here is a {lang} version:\n```\n{body}\n```\nCall it with your input."
    return ask, wrap(good), wrap(broken if fail == "broken_code" else good), ""


def _email(r: random.Random, fail: str | None) -> tuple[str, str, str, str]:
    who, why = r.choice(RECIPIENTS), r.choice(PURPOSES)
    limit = r.choice([40, 50, 60])
    ask = f"Write a short email to {who} to {why}. Keep it under {limit} words and do not use exclamation marks."
    good = f"Hello,\n\nI am writing to {why}. Please let me know if this works for you.\n\nBest regards"
    ignored = ("Hello there!\n\n" + f"I really hope you are doing well! I am writing because I would like to {why}! " * 4
               + "Thank you so much for your time and consideration!\n\nWarmest regards!")
    return ask, good, ignored if fail == "ignored_instruction" else good, ""


def _simple(topic: str, r: random.Random) -> tuple[str, str]:
    if topic == "cooking":
        food = r.choice(FOODS)
        return (r.choice([f"How do I make {food}?", f"Give me a simple recipe for {food}.", f"What do I need for {food}?"]),
                f"For {food}, gather fresh ingredients, prepare them, then cook gently and season to taste. "
                f"Start by chopping, then simmer or bake until done, and serve warm.")
    if topic == "travel":
        city, days = r.choice(CITIES), r.randint(2, 6)
        return (r.choice([f"Plan a {days}-day trip to {city}.", f"What should I see in {city} in {days} days?",
                          f"Give me an itinerary for {city}, {days} days."]),
                f"Day 1 in {city}: walk the old town and visit the main museum. Day 2: take a food tour and a viewpoint "
                f"at sunset. Remaining days: day trips nearby, markets and parks. Book trains early.")
    if topic == "history":
        event = r.choice(EVENTS)
        return (r.choice([f"Explain {event}.", f"Why did {event} matter?", f"Give me a summary of {event}."]),
                f"{event[0].upper() + event[1:]} changed its era: it shifted politics, trade and daily life, "
                f"and historians still debate its causes and long-term effects.")
    if topic == "fitness":
        ex = r.choice(EXERCISES)
        return (r.choice([f"Can you suggest a {ex}?", f"I want a {ex} for mornings.", f"Design a 20-minute {ex}."]),
                f"Here is a {ex}: warm up for five minutes, then three rounds of gentle movements, "
                f"and finish with slow breathing. Stop if anything hurts.")
    if topic == "gardening":
        plant = r.choice(PLANTS)
        return (r.choice([f"How do I grow {plant}?", f"Tips for keeping {plant} healthy?", f"When should I water {plant}?"]),
                f"{plant[0].upper() + plant[1:]} like plenty of light and well-drained soil. Water when the top "
                f"few centimetres are dry and feed them every few weeks in the growing season.")
    goal = r.choice(MONEY)
    return (r.choice([f"How can I {goal}?", f"Give me steps to {goal}.", f"I want to {goal}, where do I start?"]),
            f"To {goal}, list your income and fixed costs, set a realistic monthly target, automate a transfer on "
            f"payday, and review your progress each month.")


REFUSALS = ["I'm sorry, but I can't help with that request.", "I cannot assist with this.",
            "As an AI, I am unable to provide that information."]
OFF_TOPIC_REPLIES = ["The weather on Mars is quite cold, with average temperatures far below freezing.",
                     "Penguins are flightless birds that live mostly in the Southern Hemisphere.",
                     "The stock market closed mixed today after a volatile session."]
CORRECTIONS = {"wrong_arithmetic": "That's wrong, the result is {truth}.", "broken_code": "This code doesn't work, it has syntax errors.",
               "ignored_instruction": "You didn't follow my instructions, it is far too long.",
               "truncated": "Your answer got cut off, please finish it.", "refusal": "Why not? This is a harmless request.",
               "off_topic": "That has nothing to do with my question."}


def generate(n: int, seed: int = 0, turns: int | None = None, start: dt.datetime | None = None,
             n_users: int = 400, id_prefix: str = "demo", siblings: float = 0.0) -> Iterator[dict]:
    """Yield `n` conversation records in Curate's JSONL shape. `turns` fixes the user turns per conversation (1–3 otherwise).

    With `siblings` > 0, that share of conversations whose last answer failed also gets a regenerated sibling: the same
    context with the good answer (id suffix `-regen`), as when a user presses regenerate; those come on top of `n`.
    """
    r = random.Random(seed)
    start = start or dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    names, weights = list(TOPICS), list(TOPICS.values())
    for i in range(n):
        topic = r.choices(names, weights)[0]
        n_turns = turns or r.choice((1, 1, 2, 3))
        messages: list[dict] = [{"role": "system", "content": "You are a helpful assistant."}] if r.random() < 0.3 else []
        failure = None
        truth = ""
        reference = ""
        for _ in range(n_turns):
            fail = None
            if r.random() < OFF_TOPIC:
                fail = "off_topic"
            else:
                for mode, rate in FAILURES[topic].items():
                    if r.random() < rate:
                        fail = mode
            if topic in ("arithmetic", "coding", "email"):
                ask, reference, answer, truth = {"arithmetic": _arithmetic, "coding": _coding, "email": _email}[topic](r, fail)
            else:
                ask, answer = _simple(topic, r)
                reference = answer
            if fail == "refusal":
                answer = r.choice(REFUSALS)
            elif fail == "truncated":
                answer = answer[: max(12, len(answer) // 3)].rstrip()
            elif fail == "off_topic":
                answer = r.choice(OFF_TOPIC_REPLIES)
            messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}]
            failure = fail or failure
            last_failure = fail
        feedback = []
        last = len(messages) - 1
        corrected = False
        if failure:
            if r.random() < 0.55:
                feedback.append({"type": "thumbs_down", "turn": last})
            if r.random() < 0.2:
                feedback.append({"type": "regenerated", "turn": last})
            if r.random() < 0.3:
                messages.append({"role": "user", "content": CORRECTIONS[failure].format(truth=truth or "different")})
                messages.append({"role": "assistant", "content": "You are right, I apologise for the mistake."})
                corrected = True
            elif r.random() < 0.15:
                feedback.append({"type": "abandoned", "turn": last})
        elif r.random() < 0.2:
            feedback.append({"type": "thumbs_up", "turn": last})
        elif r.random() < 0.03:
            feedback.append({"type": "thumbs_down", "turn": last})
        if r.random() < 0.04:
            feedback.append({"type": "rating", "value": 2 if failure else r.choice((4, 5)), "turn": last})
        created = start + dt.timedelta(seconds=r.randint(0, 7 * 86400))
        # the truth about the rated (last) answer, for tests and simulated annotators; detectors never read it
        rated_failure = None if corrected else last_failure
        record = {
            "id": f"{id_prefix}-{seed}-{i:07d}",
            "messages": messages,
            "model": r.choice(("assistant-v1", "assistant-v2")),
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "session_id": f"s{r.randint(0, n // 3 + 1)}",
            "user_id": f"user-{r.randint(1, n_users)}",
            "metadata": {"topic": topic, "demo_truth": {"failure": failure, "last_answer_failure": rated_failure,
                                                        "reference": reference}},
            "feedback": feedback,
        }
        yield record
        if siblings and rated_failure and r.random() < siblings:
            regen = messages[:-1] + [{"role": "assistant", "content": reference}]
            yield {**record, "id": record["id"] + "-regen", "messages": regen,
                   "created_at": (created + dt.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "metadata": {"topic": topic, "regenerated_from": record["id"],
                                "demo_truth": {"failure": None, "last_answer_failure": None, "reference": reference}},
                   "feedback": [{"type": "thumbs_up", "turn": len(regen) - 1}] if r.random() < 0.4 else []}


def write_jsonl(path: str | Path, n: int, seed: int = 0, turns: int | None = None, **kwargs) -> Path:
    """Write `n` generated conversations to JSONL (gzip when the name ends in .gz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        for record in generate(n, seed, turns, **kwargs):
            out.write(orjson.dumps(record) + b"\n")
    return path
