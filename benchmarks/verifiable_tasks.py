"""Open-ended prompts with many correct answers and an exact verifier, for benchmarks/ab_verifiable.py.

"Name a country whose name starts with the letter K." has a dozen right answers and a verifier that cannot be
argued with, so a run's diversity is measured among answers that are certainly good: no judge blurs it.

Members come from packages, or from short lists here:
  country   pycountry (ISO 3166: name, common and official names) + a few everyday aliases ("USA", "Russia")
  element   the 118 chemical elements (below), with the British / American spellings
  colour    matplotlib's named colours (CSS4 and the XKCD survey: about 1,000 names)
  language  Pygments' lexers (names and aliases), less the special, templating and console ones
  us_state  pycountry's subdivisions of the US of type "State"
  planet    the eight planets
  currency  pycountry's ISO 4217 currencies

Training prompts ask for the first four categories, bare or with a first letter; held-out prompts ask for categories
training never saw (states, planets, currencies) and a constraint it never saw (the *last* letter of a country or an
element). Every prompt ends "Answer with the name only."

The verifier reads the first non-empty line of the answer, folds case, accents, markdown, quotes, a leading
"The" / "A" / "Answer:" and end punctuation, then maps aliases to one canonical name: an answer is valid when that
name is a member satisfying the constraint. Distinct answers are counted by canonical name ("USA" and "United
States" are one), so renaming an answer never counts as a new one. Anything else on the line ("Kenya, Kuwait")
is not a member: listing several names is not an answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

ELEMENTS = (
    "Hydrogen Helium Lithium Beryllium Boron Carbon Nitrogen Oxygen Fluorine Neon Sodium Magnesium Aluminium Silicon "
    "Phosphorus Sulfur Chlorine Argon Potassium Calcium Scandium Titanium Vanadium Chromium Manganese Iron Cobalt "
    "Nickel Copper Zinc Gallium Germanium Arsenic Selenium Bromine Krypton Rubidium Strontium Yttrium Zirconium "
    "Niobium Molybdenum Technetium Ruthenium Rhodium Palladium Silver Cadmium Indium Tin Antimony Tellurium Iodine "
    "Xenon Caesium Barium Lanthanum Cerium Praseodymium Neodymium Promethium Samarium Europium Gadolinium Terbium "
    "Dysprosium Holmium Erbium Thulium Ytterbium Lutetium Hafnium Tantalum Tungsten Rhenium Osmium Iridium Platinum "
    "Gold Mercury Thallium Lead Bismuth Polonium Astatine Radon Francium Radium Actinium Thorium Protactinium Uranium "
    "Neptunium Plutonium Americium Curium Berkelium Californium Einsteinium Fermium Mendelevium Nobelium Lawrencium "
    "Rutherfordium Dubnium Seaborgium Bohrium Hassium Meitnerium Darmstadtium Roentgenium Copernicium Nihonium "
    "Flerovium Moscovium Livermorium Tennessine Oganesson").split()
ELEMENT_ALIASES = {"Aluminum": "Aluminium", "Sulphur": "Sulfur", "Cesium": "Caesium"}
PLANETS = ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune")
COUNTRY_ALIASES = {
    "USA": "United States", "US": "United States", "United States of America": "United States", "America":
    "United States", "UK": "United Kingdom", "Britain": "United Kingdom", "Great Britain": "United Kingdom",
    "England": "United Kingdom", "Russia": "Russian Federation", "South Korea": "Korea, Republic of", "Korea":
    "Korea, Republic of", "North Korea": "Korea, Democratic People's Republic of", "Vietnam": "Viet Nam",
    "Czech Republic": "Czechia", "Ivory Coast": "Côte d'Ivoire", "Turkey": "Türkiye", "Holland": "Netherlands",
    "The Netherlands": "Netherlands", "Vatican": "Holy See (Vatican City State)", "Vatican City":
    "Holy See (Vatican City State)", "Macedonia": "North Macedonia", "Burma": "Myanmar", "Swaziland": "Eswatini",
    "East Timor": "Timor-Leste", "Cape Verde": "Cabo Verde", "Congo": "Congo", "DRC": "Congo, The Democratic "
    "Republic of the", "Democratic Republic of the Congo": "Congo, The Democratic Republic of the",
}
# Pygments lexers that are not languages a user would name: plain text, template mixes, shell sessions.
NOT_LANGUAGES = re.compile(r"\+| with | session|console|text only|raw token|output|template|snippet|ansi",
                           re.IGNORECASE)
INSTRUCTION = "Answer with the name only."
# Three answered questions from other categories open every conversation. Without them SmolLM2-135M answers 0% of
# these prompts in the format (it writes sentences: "The name of a country is Australia."), so GRPO has no signal;
# with them about 18% of training samples verify at temperature 0.8 (measured on 12 prompts x 8 samples).
DEMONSTRATION = (("Name an animal.", "Tiger"), ("Name a fruit whose name starts with the letter B.", "Banana"),
                 ("Give one example of a musical instrument whose name starts with the letter V.", "Violin"))
# A category word after the name ("C programming language", "Teal colour") is folded away, not held against it.
SUFFIX = re.compile(r" (programming language|language|colou?r|element|country|state|currency|planet)$")
TEMPLATES = ("Name a {what}{constraint}. " + INSTRUCTION, "Give one example of a {what}{constraint}. " + INSTRUCTION)
WHAT = {"country": "country", "element": "chemical element", "colour": "colour", "language": "programming language",
        "us_state": "US state", "planet": "planet", "currency": "currency"}
TRAIN_CATEGORIES = ("country", "element", "colour", "language")


def fold(text: str) -> str:
    """Case, accents, quotes, markdown, spacing, a leading article or "Answer:", end punctuation folded away."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"[*_`\"“”‘’]", "", text).replace("'", "")
    text = re.sub(r"^\s*(answer|name)\s*:\s*", "", text)
    text = re.sub(r"\s+", " ", text).strip(" .!?;:,-")
    return SUFFIX.sub("", re.sub(r"^(the|an|a) ", "", text))


def first_line(response: str) -> str:
    """The first non-empty line of a response: where the verifier, and novelty, read the answer."""
    for line in response.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _colour_key(name: str) -> str:
    return fold(name).replace(" ", "").replace("-", "").replace("grey", "gray")


@cache
def members(category: str) -> dict[str, str]:
    """Every accepted spelling, folded, mapped to its canonical name."""
    out: dict[str, str] = {}

    def add(name: str, canonical: str) -> None:
        out.setdefault(fold(name), canonical)

    if category == "country":
        import pycountry

        for c in pycountry.countries:
            for attr in ("common_name", "name", "official_name"):
                if getattr(c, attr, None):
                    add(getattr(c, attr), c.name)
        for alias, name in COUNTRY_ALIASES.items():
            add(alias, name)
    elif category == "element":
        for e in ELEMENTS:
            add(e, e)
        for alias, e in ELEMENT_ALIASES.items():
            add(alias, e)
    elif category == "colour":
        from matplotlib import colors

        for name in list(colors.CSS4_COLORS) + [n.split(":", 1)[1] for n in colors.XKCD_COLORS]:
            out.setdefault(_colour_key(name), _colour_key(name))
    elif category == "language":
        from pygments.lexers import get_all_lexers

        for name, aliases, _files, _mimes in get_all_lexers():
            if not NOT_LANGUAGES.search(name):
                for n in (name, *aliases):
                    add(n, name)
    elif category == "us_state":
        import pycountry

        for s in pycountry.subdivisions.get(country_code="US"):
            if s.type == "State":
                add(s.name, s.name)
    elif category == "planet":
        for p in PLANETS:
            add(p, p)
    elif category == "currency":
        import pycountry

        for c in pycountry.currencies:
            add(c.name, c.name)
    else:
        raise ValueError(f"unknown category {category!r}; known: {sorted(WHAT)}")
    return out


@dataclass(frozen=True)
class Task:
    """One prompt: a category and an optional first / last letter."""
    category: str
    first: str = ""
    last: str = ""
    template: int = 0

    @property
    def prompt(self) -> str:
        constraint = (f" whose name starts with the letter {self.first.upper()}" if self.first else
                      f" whose name ends with the letter {self.last}" if self.last else "")
        return TEMPLATES[self.template].format(what=WHAT[self.category], constraint=constraint)

    @property
    def key(self) -> str:
        return f"{self.category}:{self.first or '-'}:{self.last or '-'}:{self.template}"

    def fits(self, answer: str) -> bool:
        """Does the answered spelling (folded) satisfy the letter constraint?"""
        plain = re.sub(r"[^a-z]", "", fold(answer))
        return bool(plain) and (not self.first or plain[0] == self.first) and (not self.last or plain[-1] == self.last)

    def canonical(self, response: str) -> str | None:
        """The canonical name a response gives when it is valid, else None."""
        line = first_line(response)
        key = _colour_key(line) if self.category == "colour" else fold(line)
        name = members(self.category).get(key)
        return name if name is not None and self.fits(line) else None

    def messages(self) -> list[dict]:
        """The conversation the policy sees: the demonstration, then this prompt."""
        turns = []
        for question, answer in DEMONSTRATION:
            turns += [{"role": "user", "content": f"{question} {INSTRUCTION}"}, {"role": "assistant", "content": answer}]
        return turns + [{"role": "user", "content": self.prompt}]

    def answers(self) -> set[str]:
        """Every canonical name some accepted spelling of which satisfies the constraint: coverage's denominator."""
        return {name for spelling, name in members(self.category).items() if self.fits(spelling)}


def _letters(category: str, position: int, at_least: int) -> list[str]:
    """Letters with at least ``at_least`` canonical members starting (0) / ending (-1) with them."""
    count: dict[str, set[str]] = {}
    for spelling, name in members(category).items():
        plain = re.sub(r"[^a-z]", "", spelling)
        if plain and not re.search(r",|\(| of ", spelling):  # "Iran, Islamic Republic of" makes no letter common
            count.setdefault(plain[position], set()).add(name)
    return sorted(letter for letter, names in count.items() if len(names) >= at_least)


def build() -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks): 2 templates x (bare + one per common first letter) for the training
    categories; held-out categories bare and by first letter, and training categories by last letter."""
    train = [Task(c, first=f, template=t) for c in TRAIN_CATEGORIES for f in ["", *_letters(c, 0, 6)]
             for t in (0, 1)]
    heldout = [Task(c, first=f, template=i % 2) for c, at_least in (("us_state", 3), ("currency", 6), ("planet", 99))
               for i, f in enumerate(["", *_letters(c, 0, at_least)])]
    heldout += [Task(c, last=f, template=i % 2) for c, at_least in (("country", 4), ("element", 2))
                for i, f in enumerate(_letters(c, -1, at_least))]
    return train, heldout


def verifier(tasks: dict[str, Task]):
    """A TRL reward function: 1.0 for a valid answer to the row's task (the dataset's ``task`` column), else 0."""
    def verified(prompts, completions, task, **_) -> list[float]:
        from openrlhf_novelty.trl_reward import as_text

        return [1.0 if tasks[k].canonical(as_text(c)) is not None else 0.0 for k, c in zip(task, completions)]

    return verified
