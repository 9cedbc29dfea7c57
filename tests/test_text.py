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
