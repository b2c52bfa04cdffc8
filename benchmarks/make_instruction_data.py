"""Write laddertune's small instruction-tuning sample: short factual questions a pretrained LM has seen the answers to.

Six kinds of question, the facts curated by hand below: the capital of a country, the continent a country is in,
the opposite of a word, the plural of a noun, the chemical symbol of an element, and arithmetic written in words
(results zero to twenty). Answers are one to three words, so exact match scores them. Validation questions are
never in training, so a model can only answer them from what its backbone knows, not by copying a pattern.

Rows are prompt/completion JSON lines, plus a ``task`` column (ignored by layout detection) naming the kind of
question. The split is seeded and stratified per kind (about 20% of each kind to validation). No network.

Usage::

    python benchmarks/make_instruction_data.py [--out laddertune/data/sample/instructions] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "laddertune/data/sample/instructions"
VALIDATION_FRACTION = 0.2

# Countries whose capital has no accent, no competing claim and no namesake (no Bolivia, South Africa, Georgia,
# Indonesia, ...).
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "the United Kingdom": "London", "Ireland": "Dublin", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "Austria": "Vienna", "Switzerland": "Bern", "Poland": "Warsaw", "the Czech Republic": "Prague",
    "Hungary": "Budapest", "Greece": "Athens", "Sweden": "Stockholm", "Norway": "Oslo", "Denmark": "Copenhagen",
    "Finland": "Helsinki", "Russia": "Moscow", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade",
    "Croatia": "Zagreb", "Estonia": "Tallinn", "Latvia": "Riga", "Lithuania": "Vilnius", "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana", "Albania": "Tirana", "Turkey": "Ankara", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Nigeria": "Abuja", "Ethiopia": "Addis Ababa", "Morocco": "Rabat", "Ghana": "Accra", "Algeria": "Algiers",
    "Tunisia": "Tunis", "Libya": "Tripoli", "Uganda": "Kampala", "Zimbabwe": "Harare",
    "Senegal": "Dakar", "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "South Korea": "Seoul",
    "North Korea": "Pyongyang", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "the Philippines": "Manila", "Malaysia": "Kuala Lumpur", "Pakistan": "Islamabad", "Bangladesh": "Dhaka",
    "Iran": "Tehran", "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Afghanistan": "Kabul", "Nepal": "Kathmandu",
    "Syria": "Damascus", "Lebanon": "Beirut", "Jordan": "Amman", "Qatar": "Doha", "Mongolia": "Ulaanbaatar",
    "Cambodia": "Phnom Penh", "Laos": "Vientiane", "Armenia": "Yerevan",
    "Azerbaijan": "Baku", "Uzbekistan": "Tashkent", "Australia": "Canberra", "New Zealand": "Wellington",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Argentina": "Buenos Aires", "Chile": "Santiago", "Peru": "Lima",
    "Venezuela": "Caracas", "Cuba": "Havana", "Jamaica": "Kingston", "Ecuador": "Quito", "Uruguay": "Montevideo",
}  # fmt: skip

# Countries wholly on one continent (no Russia, Turkey, Egypt, the Caucasus, Central America, nor Oceania's naming
# question).
CONTINENTS = {
    "Europe": ["France", "Germany", "Italy", "Spain", "Portugal", "Ireland", "Belgium", "Austria", "Switzerland",
               "Poland", "Hungary", "Greece", "Sweden", "Norway", "Denmark", "Finland", "Romania", "Bulgaria",
               "Croatia", "Estonia", "Latvia", "Lithuania", "Slovakia", "Albania", "the Netherlands"],
    "Asia": ["Japan", "China", "India", "South Korea", "Thailand", "Vietnam", "the Philippines", "Pakistan",
             "Bangladesh", "Iran", "Iraq", "Saudi Arabia", "Afghanistan", "Nepal", "Mongolia", "Cambodia", "Laos",
             "Uzbekistan", "Jordan", "Qatar"],
    "Africa": ["Kenya", "Nigeria", "Ethiopia", "Morocco", "Ghana", "Algeria", "Tunisia", "Uganda", "Zimbabwe",
               "Senegal", "Angola", "Cameroon", "Mali", "Zambia"],
    "South America": ["Argentina", "Chile", "Peru", "Venezuela", "Ecuador", "Uruguay", "Colombia", "Paraguay",
                      "Bolivia", "Brazil"],
    "North America": ["Canada", "Mexico", "the United States"],
}  # fmt: skip

OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "left": "right", "fast": "slow", "happy": "sad",
    "dark": "light", "open": "closed", "tall": "short", "rich": "poor", "early": "late", "empty": "full",
    "heavy": "light", "wet": "dry", "strong": "weak", "good": "bad", "true": "false", "day": "night",
    "black": "white", "win": "lose", "buy": "sell", "push": "pull", "in": "out", "on": "off", "first": "last",
    "above": "below", "inside": "outside", "before": "after", "thick": "thin", "cheap": "expensive",
    "clean": "dirty", "near": "far", "high": "low", "loud": "quiet", "love": "hate", "north": "south",
    "east": "west", "yes": "no", "always": "never", "friend": "enemy", "alive": "dead", "boy": "girl",
    "man": "woman", "king": "queen", "brother": "sister", "father": "mother", "son": "daughter",
    "husband": "wife", "asleep": "awake", "absent": "present", "increase": "decrease", "maximum": "minimum",
    "positive": "negative", "import": "export", "entrance": "exit", "victory": "defeat", "sunrise": "sunset",
    "winter": "summer", "floor": "ceiling", "odd": "even", "plus": "minus", "success": "failure",
    "wide": "narrow", "deep": "shallow", "visible": "invisible", "possible": "impossible",
    "question": "answer", "long": "short", "laugh": "cry",
    "future": "past",
}  # fmt: skip

PLURALS = {
    "child": "children", "mouse": "mice", "goose": "geese", "man": "men", "woman": "women", "tooth": "teeth",
    "foot": "feet", "person": "people", "ox": "oxen", "leaf": "leaves", "knife": "knives", "wife": "wives",
    "wolf": "wolves", "half": "halves", "life": "lives", "loaf": "loaves", "shelf": "shelves",
    "thief": "thieves", "calf": "calves", "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes",
    "echo": "echoes", "box": "boxes", "fox": "foxes", "bus": "buses", "church": "churches", "dish": "dishes",
    "city": "cities", "baby": "babies", "party": "parties", "story": "stories", "lady": "ladies",
    "country": "countries", "key": "keys", "toy": "toys", "day": "days", "boy": "boys", "cat": "cats",
    "dog": "dogs", "book": "books", "tree": "trees", "car": "cars", "house": "houses", "apple": "apples",
    "table": "tables", "chair": "chairs", "bird": "birds", "sheep": "sheep", "deer": "deer",
    "crisis": "crises", "analysis": "analyses", "thesis": "theses", "phenomenon": "phenomena",
    "criterion": "criteria", "louse": "lice", "glass": "glasses", "watch": "watches", "kiss": "kisses",
    "wish": "wishes", "brush": "brushes", "class": "classes", "dress": "dresses", "match": "matches",
    "beach": "beaches", "family": "families", "body": "bodies", "fly": "flies", "spy": "spies",
    "monkey": "monkeys", "valley": "valleys", "photo": "photos", "piano": "pianos", "radio": "radios",
    "zoo": "zoos", "roof": "roofs", "chief": "chiefs", "belief": "beliefs",
}  # fmt: skip

SYMBOLS = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "beryllium": "Be", "boron": "B", "carbon": "C",
    "nitrogen": "N", "oxygen": "O", "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg",
    "aluminium": "Al", "silicon": "Si", "phosphorus": "P", "sulfur": "S", "chlorine": "Cl", "argon": "Ar",
    "potassium": "K", "calcium": "Ca", "titanium": "Ti", "chromium": "Cr", "manganese": "Mn", "iron": "Fe",
    "cobalt": "Co", "nickel": "Ni", "copper": "Cu", "zinc": "Zn", "arsenic": "As", "selenium": "Se",
    "bromine": "Br", "krypton": "Kr", "strontium": "Sr", "silver": "Ag", "tin": "Sn", "iodine": "I",
    "xenon": "Xe", "barium": "Ba", "tungsten": "W", "platinum": "Pt", "gold": "Au", "mercury": "Hg",
    "lead": "Pb", "radon": "Rn", "uranium": "U", "plutonium": "Pu",
}  # fmt: skip

NUMBERS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]  # fmt: skip
ARITHMETIC_ROWS = 150


def arithmetic(rng: random.Random) -> list[tuple[str, str]]:
    """``ARITHMETIC_ROWS`` distinct questions ``a plus/minus/times b``, operands and results within 0-20."""
    pool = []
    for a in range(21):
        for b in range(21):
            if a + b <= 20:
                pool.append((f"What is {NUMBERS[a]} plus {NUMBERS[b]}?", NUMBERS[a + b]))
            if b <= a:
                pool.append((f"What is {NUMBERS[a]} minus {NUMBERS[b]}?", NUMBERS[a - b]))
            if 2 <= a <= 10 and 2 <= b <= 10 and a * b <= 20:
                pool.append((f"What is {NUMBERS[a]} times {NUMBERS[b]}?", NUMBERS[a * b]))
    return rng.sample(pool, ARITHMETIC_ROWS)


def questions(rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """Every question and answer, per kind."""
    return {
        "capital": [(f"What is the capital of {c}?", city) for c, city in CAPITALS.items()],
        "continent": [
            (f"On which continent is {country}?", continent)
            for continent, countries in CONTINENTS.items()
            for country in countries
        ],
        "opposite": [(f'What is the opposite of "{w}"?', o) for w, o in OPPOSITES.items()],
        "plural": [(f'What is the plural of "{w}"?', p) for w, p in PLURALS.items()],
        "symbol": [(f"What is the chemical symbol of {e}?", s) for e, s in SYMBOLS.items()],
        "arithmetic": arithmetic(rng),
    }


def split(seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded, stratified split: about ``VALIDATION_FRACTION`` of each kind to validation; both shuffled."""
    rng = random.Random(seed)
    train, validation = [], []
    for task, pairs in questions(rng).items():
        rows = [{"prompt": q, "completion": a, "task": task} for q, a in pairs]
        rng.shuffle(rows)
        n_val = round(len(rows) * VALIDATION_FRACTION)
        validation += rows[:n_val]
        train += rows[n_val:]
    rng.shuffle(train)
    rng.shuffle(validation)
    prompts = [r["prompt"] for r in train + validation]
    assert len(prompts) == len(set(prompts)), "a question appears twice"
    return train, validation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for train.jsonl and validation.jsonl")
    parser.add_argument("--seed", type=int, default=0, help="seed of the arithmetic sample and of the split")
    args = parser.parse_args(argv)
    train, validation = split(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation)):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (args.out / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    print(f"{args.out}: {len(train)} train rows, {len(validation)} validation rows")


if __name__ == "__main__":
    main()
