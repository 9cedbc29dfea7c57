import json
import pathlib

import pytest

from openrlhf_novelty.config import ConfigError, NoveltyConfig, reference_markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_documented():
    cfg = NoveltyConfig()
    assert cfg.rnd_update_proportion == 0.25  # CleanRL's value
    assert cfg.reward_gate == "multiplicative"
    assert not cfg.judge_enabled


def test_nested_sections_and_flat_keys_name_the_same_field():
    nested = NoveltyConfig.from_dict({"rnd": {"lr": 3e-4}, "diversity": {"mode": "partition"}})
    flat = NoveltyConfig.from_dict({"rnd_lr": 3e-4, "diversity.mode": "partition"})
    assert nested == flat
    assert nested.rnd_lr == 3e-4 and nested.diversity_mode == "partition"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rnd": {"lrr": 1}}, "unknown key 'rnd.lrr' (did you mean 'rnd.lr'?)"),
        ({"rnd": {"update_proportion": 1.5}}, "config rnd.update_proportion: 1.5 is out of range [0, 1]"),
        ({"rnd": {"hidden": "big"}}, "config rnd.hidden: expected an integer, got 'big'"),
        ({"diversity": {"mode": "median"}}, "config diversity.mode: 'median' is not one of mean, min, partition"),
        ({"archive": {"per_prompt": "yes"}}, "config archive.per_prompt: expected true or false, got 'yes'"),
        ({"extract": {"pattern": "HYP:("}}, "config extract.pattern: not a valid regex"),
        ({"reward": {"task_clip": [1.0, 0.0]}}, "config reward.task_clip: must be [lo, hi] with lo <= hi"),
        ({"rnd": {"lr": float("nan")}}, "config rnd.lr: must be a finite number"),
        ({"judge": {"base_url": "http://127.0.0.1:1/v1"}}, "config judge.model: required when judge.base_url is set"),
        (["rnd"], "config: expected a mapping of settings, got list"),
    ],
)
def test_bad_settings_are_rejected_with_a_message_naming_them(data, message):
    with pytest.raises(ConfigError) as err:
        NoveltyConfig.from_dict(data)
    assert message in str(err.value)


def test_integral_float_is_accepted_for_int_and_int_for_float():
    cfg = NoveltyConfig.from_dict({"rnd": {"hidden": 64.0, "lr": 1}})
    assert cfg.rnd_hidden == 64 and isinstance(cfg.rnd_hidden, int)
    assert cfg.rnd_lr == 1.0 and isinstance(cfg.rnd_lr, float)


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("rnd:\n  weight: 0.1\nreward:\n  gate: threshold\n")
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"rnd_weight": 0.1, "reward": {"gate": "threshold"}}))
    assert NoveltyConfig.from_file(y) == NoveltyConfig.from_file(j)
    assert NoveltyConfig.from_file(y).reward_gate == "threshold"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert NoveltyConfig.from_file(empty) == NoveltyConfig()


def test_unreadable_and_malformed_files_say_which_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml: cannot read"):
        NoveltyConfig.from_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rnd: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config file .*bad.yaml: not valid YAML"):
        NoveltyConfig.from_file(bad)


def test_set_overrides_parse_values_as_yaml():
    cfg = NoveltyConfig().with_overrides(["rnd.lr=3e-4", "archive.per_prompt=true", "reward.task_clip=[-1, 1]"])
    assert (cfg.rnd_lr, cfg.archive_per_prompt, cfg.reward_task_clip) == (3e-4, True, [-1.0, 1.0])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        NoveltyConfig().with_overrides(["rnd.lr"])


def test_example_config_is_valid():
    cfg = NoveltyConfig.from_file(ROOT / "examples" / "hypothesis.yaml")
    assert cfg.extract_pattern == r"HYP:\s*(.+)"


def test_readme_reference_matches_the_dataclass():
    # The configuration reference is generated; regenerate with `make docs`.
    assert reference_markdown() in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_exponent_without_dot_in_yaml_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) parses `1e-3` as the string "1e-3"; users write it that way all the time.
    f = tmp_path / "c.yaml"
    f.write_text("rnd:\n  lr: 1e-3\n")
    assert NoveltyConfig.from_file(f).rnd_lr == 0.001
    with pytest.raises(ConfigError, match="config rnd.lr: expected a number, got 'fast'"):
        NoveltyConfig.from_dict({"rnd": {"lr": "fast"}})


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bank.txt").write_text("known\n")
    f = tmp_path / "sub" / "c.yaml"
    f.write_text("bank:\n  path: bank.txt\njudge:\n  rubric: hypothesis\n")
    cfg = NoveltyConfig.from_file(f)
    assert cfg.bank_path == str(tmp_path / "sub" / "bank.txt")
    assert cfg.judge_rubric == "hypothesis"  # a built-in name stays a name
