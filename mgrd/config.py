"""Config loading: dataclass defaults in code, overridden by a YAML file, then by `key=value` CLI overrides.

Unknown keys raise (a typo must never be silently ignored), with the closest known key suggested.
Nested dataclasses are addressed with dots: `sampling.temperature=0.7`. Values are parsed as YAML
scalars, so `3`, `0.5`, `true`, `null` and `[1, 2]` have their natural types, and checked against the
field's type (`true` is not a number; a single value for a tuple field is a one-element tuple).

Named configs ship inside the package (`mgrd/configs/*.yaml`), so `--config generate` (or the path
`configs/generate.yaml`) works from any working directory; a file that exists at the given path wins.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the named configs shipped with mgrd


class ConfigKeyError(ValueError):
    """A config file or override names a key the config does not have, or gives a bad value."""


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, defaults: dict | None = None
) -> T:
    """Build `cls` from its defaults, then `defaults` (a caller's own), a YAML file and `key=value` overrides.

    Later sources win. Raises ConfigKeyError for unknown keys, bad values and a missing file.
    """
    values: dict = dict(defaults or {})
    if path is not None:
        path = resolve_config(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigKeyError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(loaded, dict):
            raise ConfigKeyError(f"{path}: expected a mapping at the top level")
        _merge(values, loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigKeyError(f"override {item!r} is not key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigKeyError(f"override {item!r}: value is not valid YAML ({err.problem})") from None
        _set_dotted(values, key.strip(), value)
    return _build(cls, values, prefix="")


def named_configs() -> list[str]:
    """The names of the configs shipped with mgrd (`generate`, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A config file: the path itself if it exists, else a named config (`generate`, `generate.yaml` or
    `configs/generate.yaml`) from the package.

    Raises:
        ConfigKeyError: neither exists; the message lists the named configs.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) and len(path.parts) > 1 else path
    named = CONFIG_DIR / (rel if rel.suffix in (".yaml", ".yml") else rel.with_suffix(".yaml"))
    if not path.is_absolute() and named.is_file():
        return named
    raise ConfigKeyError(f"config file not found: {name_or_path} (named configs: {', '.join(named_configs())})")


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _set_dotted(values: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        values = values.setdefault(part, {})
        if not isinstance(values, dict):
            raise ConfigKeyError(f"{'.'.join(parts[: i + 1])} is a value, not a section; cannot set {key}")
    values[parts[-1]] = value


def _build(cls, values: dict, prefix: str, base=None):
    """`cls` from `values`; fields not in `values` keep `base`'s values (a section's own defaults) when given."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            hint = difflib.get_close_matches(key, fields, n=1)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigKeyError(f"unknown config key {prefix}{key}{suggestion}; known: {', '.join(fields)}")
        default = _default(fields[key])
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigKeyError(f"{prefix}{key} is a section; give it keys, e.g. {prefix}{key}.x=...")
            kwargs[key] = _build(type(default), value, prefix=f"{prefix}{key}.", base=default)
        else:
            kwargs[key] = _coerce(value, default, f"{prefix}{key}", fields[key].type)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigKeyError(f"{prefix or 'config'}: {err}") from None


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _coerce(value, default, name: str, annotation=None):
    """Check a value against the field's type and default; convert where unambiguous (ints for floats, lists for tuples)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    kinds = text.replace("typing.", "").replace(" ", "").split("|")
    if value is None:
        if default is not None and "None" not in kinds:
            raise ConfigKeyError(f"{name} cannot be null")
        return value
    if "int" in kinds and "float" not in kinds and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigKeyError(f"{name} must be a whole number, got {value!r}")
    if "float" in kinds and isinstance(value, bool):  # YAML's true is a bool, and bool is an int to Python
        raise ConfigKeyError(f"{name} must be a number, got {value!r}")
    if isinstance(default, tuple) and not isinstance(value, (list, tuple)):
        value = [value]  # `stop_ids=5`: one element
    if isinstance(default, tuple) and text.startswith("tuple[int"):
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise ConfigKeyError(f"{name} must be whole numbers, got {bad[0]!r} in {value!r}")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigKeyError(f"{name} must be true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if "float" in kinds and isinstance(value, str):
        value = _float_or_same(value)  # YAML 1.1 reads `1e-5` (no dot) as a string
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        raise ConfigKeyError(f"{name} must be a number, got {value!r}")
    return value


def _float_or_same(text: str):
    """`float(text)` for number spellings YAML 1.1 leaves as strings (`1e-5`, `2E3`); else `text` unchanged."""
    try:
        return float(text) if text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity") else text
    except ValueError:
        return text


def to_dict(obj) -> dict:
    """A config as plain data (for writing the resolved `config.yaml` of a run)."""
    return dataclasses.asdict(obj)
