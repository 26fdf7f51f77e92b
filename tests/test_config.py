"""Config loading: defaults, YAML, overrides, unknown keys, nested sections, types, named configs, every shipped YAML."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mgrd.config import CONFIG_DIR, ConfigKeyError, load_config, named_configs, resolve_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "mgrd" / "configs"


@dataclass
class Inner:
    lr: float = 1e-4
    steps: int = 10


@dataclass
class Outer:
    name: str = "run"
    tags: tuple = ()
    verbose: bool = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: from-yaml\ninner:\n  steps: 20\n")
    cfg = load_config(Outer, path, ["inner.lr=3", "tags=[a, b]", "verbose=true"], defaults={"name": "d", "inner": {"lr": 1.0}})
    assert cfg == Outer(name="from-yaml", tags=("a", "b"), verbose=True, inner=Inner(lr=3.0, steps=20))
    assert isinstance(cfg.inner.lr, float)
    assert to_dict(cfg)["inner"] == {"lr": 3.0, "steps": 20}


def test_unknown_keys_raise_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigKeyError, match=r"unknown config key inner.step \(did you mean inner.steps\?\)"):
        load_config(Outer, None, ["inner.step=3"])
    path = tmp_path / "c.yaml"
    path.write_text("nmae: x\n")
    with pytest.raises(ConfigKeyError, match=r"unknown config key nmae \(did you mean name\?\)"):
        load_config(Outer, path)


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigKeyError, match="inner.steps must be a whole number"):
        load_config(Outer, None, ["inner.steps=many"])
    with pytest.raises(ConfigKeyError, match="inner.lr must be a number"):
        load_config(Outer, None, ["inner.lr=fast"])
    with pytest.raises(ConfigKeyError, match="must be true or false"):
        load_config(Outer, None, ["verbose=3"])
    with pytest.raises(ConfigKeyError, match="not key=value"):
        load_config(Outer, None, ["verbose"])
    with pytest.raises(ConfigKeyError, match="is a section"):
        load_config(Outer, None, ["inner=3"])
    with pytest.raises(ConfigKeyError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_every_yaml_in_configs_loads():
    from mgrd.generate import SamplingConfig
    from mgrd.loop.driver import LoopConfig
    from mgrd.train.rl import RLConfig
    from mgrd.train.sft import SFTConfig

    owners = {"generate.yaml": SamplingConfig, **{p.name: SFTConfig for p in CONFIGS.glob("sft_*.yaml")},
              **{p.name: RLConfig for p in CONFIGS.glob("rl_*.yaml")},
              **{p.name: LoopConfig for p in CONFIGS.glob("loop_*.yaml")}}
    files = sorted(CONFIGS.glob("*.yaml"))
    assert files, "mgrd/configs/ holds no YAML"
    assert CONFIG_DIR == CONFIGS and named_configs() == [p.stem for p in files]
    for path in files:
        assert path.name in owners, f"{path.name}: say which config class it fills in tests/test_config.py"
        # a loop that starts from a released model needs its folder; the file is still checked key by key
        load_config(owners[path.name], path, ["model=/any/checkpoint"] if path.name == "loop_gpu.yaml" else [])


@dataclass
class Typed:
    seed: int | None = None
    k: int = 0
    p: float = 1.0


def test_values_are_checked_against_the_field_types():
    assert load_config(Typed, None, ["seed=3", "k=2", "p=1"]) == Typed(seed=3, k=2, p=1.0)
    assert load_config(Typed, None, ["seed=null"]).seed is None
    with pytest.raises(ConfigKeyError, match="seed must be a whole number, got 'abc'"):
        load_config(Typed, None, ["seed=abc"])
    with pytest.raises(ConfigKeyError, match="k must be a whole number, got 1.5"):
        load_config(Typed, None, ["k=1.5"])
    with pytest.raises(ConfigKeyError, match="k cannot be null"):
        load_config(Typed, None, ["k=null"])
    with pytest.raises(ConfigKeyError, match="not valid YAML"):
        load_config(Typed, None, ["p=["])
    with pytest.raises(ConfigKeyError, match="is a value, not a section"):
        load_config(Outer, None, ["name=1", "name.x=2"])


def test_float_fields_refuse_booleans_and_tuple_fields_take_one_value():
    from mgrd.generate import SamplingConfig

    with pytest.raises(ConfigKeyError, match="temperature must be a number, got True"):
        load_config(SamplingConfig, None, ["temperature=true"])
    with pytest.raises(ConfigKeyError, match="top_p must be a number, got False"):
        load_config(SamplingConfig, None, ["top_p=false"])
    assert load_config(SamplingConfig, None, ["stop_ids=5"]).stop_ids == (5,)
    assert load_config(SamplingConfig, None, ["stop_ids=[5, 7]"]).stop_ids == (5, 7)
    with pytest.raises(ConfigKeyError, match=r"stop_ids must be whole numbers, got 'x' in \['x'\]"):
        load_config(SamplingConfig, None, ["stop_ids=x"])
    with pytest.raises(ConfigKeyError, match="stop_ids must be whole numbers, got True"):
        load_config(SamplingConfig, None, ["stop_ids=[1, true]"])


def test_named_configs_work_from_any_working_directory(tmp_path, monkeypatch):
    from mgrd.generate import SamplingConfig

    monkeypatch.chdir(tmp_path)  # not the repository root
    shipped = CONFIGS / "generate.yaml"
    for name in ("generate", "generate.yaml", "configs/generate.yaml", str(shipped)):
        assert resolve_config(name) == shipped, name
    assert load_config(SamplingConfig, "configs/generate.yaml").temperature == 0.7
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "generate.yaml").write_text("temperature: 0.2\n")  # a file at the path wins
    assert load_config(SamplingConfig, "configs/generate.yaml").temperature == 0.2
    with pytest.raises(ConfigKeyError, match=r"config file not found: nope \(named configs: generate, "):
        resolve_config("nope")
    with pytest.raises(ConfigKeyError, match="config file not found"):
        resolve_config(tmp_path / "generate.yaml")  # an absolute path is only ever that path
