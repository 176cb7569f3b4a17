"""Knowledge prompts: the shape, colour or count is given by a fact, not by name.

"a shape with three corners, the colour of grass" → "a green triangle". The understanding
model learns to answer such a prompt with the plain caption; the generator draws from that.
The last fact of every concept and a set of phrasings are held out of training, so
evaluation can ask known facts in unseen words, or (unseen_facts=True) unseen facts.
"""
from __future__ import annotations

import random

from .shapes import article

SHAPE_FACTS = {
    "triangle": ["a shape with three corners", "a shape with three sides", "the shape of a yield sign",
                 "the shape of a slice of pizza", "the shape of a pyramid seen from the side", "the shape of a sail"],
    "circle": ["a shape with no corners", "a perfectly round shape", "the shape of a coin", "the shape of a wheel",
               "the shape of a full moon", "the shape of a clock face"],
    "square": ["a shape with four equal sides and four right angles", "the shape of a chessboard tile",
               "the shape of a sticky note", "the shape of a face of a dice", "the shape of a postage stamp",
               "the shape of a window pane"],
    "diamond": ["a square standing on one of its corners", "the shape of a kite", "the shape of a rhombus",
                "the shape of the diamonds suit on playing cards", "the shape of a baseball infield",
                "the shape of a road warning sign"],
}
COLOR_FACTS = {  # things, read as "the colour of {thing}"
    "red": ["blood", "a fire truck", "a ripe strawberry", "a ripe tomato", "a stop sign", "a ladybug"],
    "orange": ["a carrot", "a pumpkin", "an orange", "a basketball", "a traffic cone", "a goldfish"],
    "yellow": ["a banana", "a lemon", "an egg yolk", "a sunflower", "a school bus", "a rubber duck"],
    "green": ["grass", "a summer leaf", "a frog", "broccoli", "a lime", "a cucumber"],
    "cyan": ["a tropical lagoon", "turquoise", "a swimming pool", "a glacier lake", "aquamarine", "a kingfisher"],
    "blue": ["the sky on a clear day", "the deep ocean", "a blueberry", "blue jeans", "a sapphire", "a bluebird"],
    "purple": ["grapes", "an eggplant", "lavender", "an amethyst", "a plum", "a violet"],
    "pink": ["a flamingo", "bubble gum", "a piglet", "cherry blossoms", "cotton candy", "a pink rose"],
}
COUNT_FACTS = {  # read as "as many ... as there are {fact}"
    2: ["wheels on a bicycle", "eyes on a face", "wings on a bird", "hands on a person"],
    3: ["sides of a triangle", "wheels on a tricycle", "legs on a tripod", "primary colours"],
    4: ["wheels on a car", "legs on a chair", "seasons in a year", "sides of a square"],
}
NUMBERS = {2: "two", 3: "three", 4: "four"}

# {s}: shape fact, {t}: colour thing, {c}/{k}/{ks}: plain colour / kind / kinds, {f}: count fact
TEMPLATES = {
    "shape": (["{s}, colored {c}", "{s}, coloured {c}", "{s} in {c}", "draw {s}, in {c}", "{s} that is {c}"],
              ["please draw {s} and make it {c}", "{s}, painted {c}"]),
    "color": (["{a} {k} the colour of {t}", "{a} {k} the color of {t}", "{a} {k} coloured like {t}",
               "draw {a} {k} in the colour of {t}"],
              ["{a} {k} with the same colour as {t}", "please draw {a} {k} colored like {t}"]),
    "both": (["{s}, the colour of {t}", "{s}, the color of {t}", "{s} coloured like {t}", "draw {s} in the colour of {t}"],
             ["{s} with the same colour as {t}", "please draw {s}, colored like {t}"]),
    "count": (["as many {c} {ks} as there are {f}", "draw as many {c} {ks} as there are {f}"],
              ["a number of {c} {ks} equal to the number of {f}"]),
}


def _facts(bank: dict, held_out: bool) -> dict:
    """Each concept's facts for one split: all but the last for training, the last held out."""
    return {key: (facts[-1:] if held_out else facts[:-1]) for key, facts in bank.items()}


def knowledge_prompt(rng: random.Random, held_out_phrasing: bool = False, unseen_facts: bool = False):
    """(prompt, spec, explicit_caption): "a shape with three corners in red" → "a red triangle"."""
    shapes, colors, counts = (_facts(b, unseen_facts) for b in (SHAPE_FACTS, COLOR_FACTS, COUNT_FACTS))
    kind, color = rng.choice(list(shapes)), rng.choice(list(colors))
    form = rng.choice(list(TEMPLATES))
    template = rng.choice(TEMPLATES[form][1 if held_out_phrasing else 0])
    count = rng.choice(list(counts)) if form == "count" else 1
    prompt = template.format(s=rng.choice(shapes[kind]), t=rng.choice(colors[color]), c=color, k=kind,
                             ks=kind + "s", a=article(kind), f=rng.choice(counts[count]) if form == "count" else "")
    spec = {"objects": [{"kind": kind, "color": color, "count": count}], "relation": None, "background": None}
    explicit = f"{article(color)} {color} {kind}" if count == 1 else f"{NUMBERS[count]} {color} {kind}s"
    return prompt, spec, explicit


def fact_question(rng: random.Random) -> tuple[str, str]:
    """A single training fact as a question: "what colour is grass?" → "green"."""
    which = rng.choice(["shape", "color", "count"])
    if which == "shape":
        kind, facts = rng.choice(list(_facts(SHAPE_FACTS, False).items()))
        return f"{rng.choice(facts)}: which shape is that?", kind
    if which == "color":
        color, things = rng.choice(list(_facts(COLOR_FACTS, False).items()))
        return f"what {rng.choice(['colour', 'color'])} is {rng.choice(things)}?", color
    n, facts = rng.choice(list(_facts(COUNT_FACTS, False).items()))
    return f"how many {rng.choice(facts)}?", str(n)


def knowledge_eval_prompts(seed: int, n: int, unseen_facts: bool = False) -> list[tuple[str, dict, str]]:
    """n held-out-phrasing (prompt, spec, explicit_caption), the same for the same seed."""
    rng = random.Random(f"knowledge-eval:{seed}:{unseen_facts}")
    return [knowledge_prompt(rng, held_out_phrasing=True, unseen_facts=unseen_facts) for _ in range(n)]


def knowledge_phrasings(held_out: bool) -> set[str]:
    return {t for bank in TEMPLATES.values() for t in bank[1 if held_out else 0]}
