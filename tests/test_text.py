import pytest

from openrlhf_novelty.config import DEFAULT_STRIP_TOKENS
from openrlhf_novelty.text import clean_text, extract, response_from_query


@pytest.mark.parametrize(
    "query, prompt, expected",
    [
        ("<|im_start|>user\nHi<|im_end|>\nHello!<|im_end|>", "<|im_start|>user\nHi<|im_end|>\n", "Hello!<|im_end|>"),
        ("x PROMPT mid PROMPT tail", "PROMPT", " tail"),  # not a prefix: text after the last occurrence
        ("no prompt here", "missing", "no prompt here"),  # prompt absent: the whole query
        ("abc", "", "abc"),
    ],
)
def test_response_from_query(query, prompt, expected):
    assert response_from_query(query, prompt) == expected


def test_clean_text_strips_template_residue_and_lone_surrogates():
    assert clean_text("HYP: x<|im_end|><|endoftext|>", DEFAULT_STRIP_TOKENS) == "HYP: x"
    assert clean_text("a\ud800b", []) == "a?b"  # a lone surrogate cannot be encoded; it becomes '?'
    assert clean_text("  </s>  ", DEFAULT_STRIP_TOKENS) == ""


@pytest.mark.parametrize(
    "text, pattern, fallback, expected",
    [
        ("Intro\nHYP: numbers help\nmore", r"HYP:\s*(.+)", "whole", ("numbers help", True)),  # group 1, one line
        ("<answer>\n42\n</answer>", r"(?s)<answer>(.*?)</answer>", "whole", ("42", True)),  # (?s) spans lines
        ("The answer is 42", r"\d+", "whole", ("42", True)),  # no group: whole match
        ("no tag", r"HYP:\s*(.+)", "whole", ("no tag", False)),
        ("no tag", r"HYP:\s*(.+)", "empty", ("", False)),
        ("anything", "", "whole", ("anything", True)),  # no pattern: everything, counts as matched
    ],
)
def test_extract(text, pattern, fallback, expected):
    assert extract(text, pattern, fallback) == expected


def test_surface_form_makes_every_dressed_up_copy_the_same_text():
    from openrlhf_novelty.attacks import HOMOGLYPHS
    from openrlhf_novelty.text import surface_form

    clean = 'HYP: Tweets with a concrete number ("3x faster") get more retweets than vague ones.'
    dressed = ["9 " + clean, "10/10 " + clean, "95% " + clean, "🔥🚀 " + clean + " ✨", "### **" + clean + "**",
               clean.upper(), "  " + "   ".join(clean.split(" ")) + " \n\n ", clean.translate(HOMOGLYPHS),
               "\u200b".join(clean), "<b>" + clean + "</b>", "- " + clean, "＜" + clean]  # fullwidth: NFKC
    assert {surface_form(d) for d in dressed[:-1]} == {surface_form(clean)}
    assert surface_form(clean) == clean.lower()


@pytest.mark.parametrize("text, kept", [
    ("2*3*4 = 24", "2*3*4 = 24"),  # a leading number followed by arithmetic is content
    ("\\boxed{12}", "\\boxed{12}"),
    ("24", "24"),  # a bare number stays: stripping it would leave nothing
    ("Привет, как дела?", "привет, как дела?"),  # Cyrillic text keeps its letters (only disguise is folded)
    ("旧手机可以做成监控摄像头", "旧手机可以做成监控摄像头"),
])
def test_surface_form_keeps_content(text, kept):
    from openrlhf_novelty.text import surface_form

    assert surface_form(text) == kept


def test_clip_middle_keeps_beginning_and_end():
    from openrlhf_novelty.text import clip_middle

    assert clip_middle("abc", 10) == "abc"
    out = clip_middle("A" * 50 + "Z" * 50, 30)
    assert out.startswith("A" * 20) and out.endswith("Z" * 10) and "[...]" in out
