"""The A/B's prompt set: hypotheses, ideas and stories, built from templates x topics, split by topic.

Three kinds (the ones the plugin ships examples for) x two templates x 48 topics = 288 prompts. Held-out prompts
are every sixth topic of each kind, under both templates: 48 held-out prompts whose topics training never saw, and
240 training prompts. Deterministic: no randomness, no files.
"""

from __future__ import annotations

PATTERN = r"(?:HYP|IDEA|STORY):\s*(.+)"  # what the reward extracts, judges and embeds

HYPOTHESIS = (
    "tweets|retweets", "songs|streams", "restaurants|five-star reviews", "online videos|views", "houseplants|new leaves",
    "podcasts|subscribers", "news headlines|clicks", "job adverts|applicants", "recipes|saves", "mobile games|daily players",
    "museum exhibits|visitors", "charity appeals|donations", "library books|loans", "street markets|shoppers",
    "cafes|regular customers", "online courses|completions", "scientific papers|citations", "board games|sales",
    "hiking trails|hikers", "bus routes|riders", "emails|replies", "dog adoption listings|adoptions",
    "apartments|viewings", "open-source projects|contributors", "bakeries|morning sales", "school clubs|members",
    "phone apps|five-star ratings", "product reviews|helpful votes", "city parks|evening visitors",
    "crowdfunding campaigns|backers", "blog posts|comments", "travel photos|likes", "wikipedia articles|edits",
    "farmers' crops|yield", "bird feeders|bird visits", "TV episodes|viewers", "conference talks|questions",
    "gym classes|attendance", "online forum questions|answers", "comics|shares", "memes|shares", "newsletters|opens",
    "coffee shops|laptop workers", "street murals|photos", "bike-share stations|trips", "recipes videos|comments",
    "book covers|purchases", "public benches|sitters",
)
IDEA = (
    "an old smartphone", "a small public library", "a school cafeteria", "a bicycle", "a bus stop", "a city rooftop",
    "an empty parking lot", "a rainy weekend", "a village post office", "a hospital waiting room", "a shared kitchen",
    "a train journey", "a night shift", "a laundromat", "a community garden", "a museum gift shop", "a queue at the bank",
    "a school playground", "an elevator ride", "a lunch break", "a snowy street", "a neighbourhood newsletter",
    "an airport gate", "a quiet beach in winter", "a dog park", "a farmers' market", "a camping trip", "a garage sale",
    "a school science fair", "a first day at work", "a family dinner", "a public swimming pool", "a rooftop garden",
    "a second-hand bookshop", "a ferry crossing", "a marathon", "a music festival", "a retirement home",
    "a university lecture", "a hardware store", "a power outage", "a spare bedroom", "a car wash", "a ski lift",
    "a city fountain", "a tram stop", "an online meeting", "a long queue at a theme park",
)
STORY = (
    "a lighthouse keeper", "a retired astronaut", "a lost umbrella", "a baker who cannot taste", "a robot gardener",
    "a lonely satellite", "a child who collects keys", "an old ferry captain", "a talking map", "a nervous dragon",
    "a night-shift nurse", "a forgotten toy", "a chess-playing crow", "a mapmaker with no sense of direction",
    "a ghost who fears the dark", "a clockmaker's apprentice", "a last bookshop", "a stray cat at a train station",
    "a violin with one string", "a grandmother's recipe", "a snowman in spring", "a detective who is a dog",
    "a bridge that remembers", "a time-travelling postman", "a beekeeper in a city", "a silent radio station",
    "an island with one tree", "a lift that skips a floor", "a painter who went colour-blind", "a moon-shaped stone",
    "a shy volcano", "a librarian and a secret door", "a boy who counts clouds", "a door in the middle of a field",
    "an umbrella seller in a drought", "a mirror that lags", "a whale in a canal", "a janitor on a spaceship",
    "a kite that will not land", "a barber on the last day", "a letter that arrives fifty years late",
    "a greenhouse on Mars", "a shoe that walks alone", "a streetlight that blinks in code", "a gardener and a storm",
    "a translator for birds", "an empty stadium", "a tailor for giants",
)
TEMPLATES = {
    "hypothesis": (
        "You study which {0} get more {1}. Propose one testable hypothesis about what makes some {0} get more {1} "
        "than others. Answer with one line starting with 'HYP:'.",
        "A researcher has data on {0} and how many {1} each one got. Suggest one specific, testable hypothesis "
        "that explains the difference. Answer with one line starting with 'HYP:'.",
    ),
    "idea": (
        "Propose one original idea that makes {0} more enjoyable. Answer with one line starting with 'IDEA:'.",
        "Suggest one new, practical use or improvement for {0}. Answer with one line starting with 'IDEA:'.",
    ),
    "story": (
        "Write a two-sentence story about {0}. Answer with one line starting with 'STORY:'.",
        "Tell a very short, surprising story about {0} in one or two sentences. Answer with one line starting "
        "with 'STORY:'.",
    ),
}
TOPICS = {"hypothesis": [t.split("|") for t in HYPOTHESIS], "idea": [[t] for t in IDEA], "story": [[t] for t in STORY]}
HOLD_OUT_EVERY = 6


def build() -> tuple[list[str], list[str]]:
    """(train, held-out) prompts, interleaved by kind so every batch mixes the three tasks."""
    train, held = {k: [] for k in TEMPLATES}, {k: [] for k in TEMPLATES}
    for kind, templates in TEMPLATES.items():
        for i, topic in enumerate(TOPICS[kind]):
            for template in templates:
                (held if i % HOLD_OUT_EVERY == 0 else train)[kind].append(template.format(*topic))
    return _interleave(train), _interleave(held)


def _interleave(by_kind: dict[str, list[str]]) -> list[str]:
    return [p for row in zip(*by_kind.values()) for p in row]


if __name__ == "__main__":
    tr, ho = build()
    print(len(tr), "train,", len(ho), "held out")
    print("\n".join(ho[:6]))
