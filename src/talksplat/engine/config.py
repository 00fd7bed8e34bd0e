"""Typed configuration: dataclasses saved as JSON with every run and checkpoint, and set from the CLI.

Every field of a recipe's config is reachable by its dotted name (``iterations.motion``,
``face_motion.grid.num_levels``): ``talksplat train --set KEY=VALUE`` and ``--config FILE`` (JSON or
TOML with the same nesting) go through :func:`apply_overrides`, which parses each value by the
field's type and rejects unknown keys with a one-line error.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import ClassVar

from talksplat.errors import TalksplatError, UsageError


@dataclasses.dataclass
class RecipeConfig:
    """Fields every recipe config has (recipes subclass this and add theirs)."""

    size: int = 256              # training (and rendering) resolution, square
    seed: int = 0
    # Audio feature the run conditions on: mel, phones, mel+phones, avsync[:DIR], wav2vec2:DIR, hubert:DIR
    # (computed from the subject's audio and cached when prepare did not write it).
    audio_feature: str = "mel"
    # Settings added after checkpoints of the recipe were first written (dotted names for nested ones,
    # as --set takes them), with the value such a checkpoint was trained with: a key missing from a
    # saved config means that value, not today's default (a new default must not change what an older
    # run renders).
    absent_in_older_checkpoints: ClassVar[dict[str, object]] = {}

    def validate(self) -> None:
        """Raises ValueError naming the bad field; recipes extend it."""
        if self.size < 32 or self.size % 2:
            raise ValueError("size must be an even number >= 32")


def _hints(config_type) -> dict:
    """Type hints of the dataclass fields only (class-level constants are not settings)."""
    hints = typing.get_type_hints(config_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_type)}


def _strip_optional(hint):
    """(inner type, optional?) for ``X | None`` / ``Optional[X]``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _check_value(hint, value, where: str):
    """``value`` (from JSON) converted to ``hint``; TalksplatError when it cannot be."""
    hint, optional = _strip_optional(hint)
    if value is None:
        if optional:
            return None
        raise TalksplatError(f"{where} is null but must be {getattr(hint, '__name__', hint)}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TalksplatError(f"{where} must be an object (got {type(value).__name__})")
        return config_from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TalksplatError(f"{where} must be a list (got {type(value).__name__})")
        args = typing.get_args(hint)
        item = args[0] if args else typing.Any
        return tuple(_check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or origin is list or hint is typing.Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise TalksplatError(f"{where} must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TalksplatError(f"{where} must be an integer (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TalksplatError(f"{where} must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TalksplatError(f"{where} must be a string (got {value!r})")
        return value
    return value


def config_from_dict(config_type, values, where: str = "config"):
    """Rebuilds a (nested) dataclass from its ``asdict`` form, checking every key and type."""
    if not isinstance(values, dict):
        raise TalksplatError(f"{where} must be an object of settings (got {type(values).__name__})")
    hints = _hints(config_type)
    names = {f.name for f in dataclasses.fields(config_type)}
    unknown = set(values) - names
    if unknown:
        raise TalksplatError(f"{where} has unknown keys {sorted(unknown)} for {config_type.__name__}; "
                             "it was written by a different talksplat version")
    kwargs = {name: _check_value(hints[name], value, f"{where}.{name}" if where != "config" else name)
              for name, value in values.items()}
    return config_type(**kwargs)


def config_from_saved(config_type, values: dict, where: str = "config"):
    """:func:`config_from_dict` for a config saved with a checkpoint: keys it lacks that the recipe
    lists in ``absent_in_older_checkpoints`` take the value they had when it was written."""
    if isinstance(values, dict):
        values = copy.deepcopy(values)
        for dotted, value in getattr(config_type, "absent_in_older_checkpoints", {}).items():
            *parents, leaf = dotted.split(".")
            node = values
            for name in parents:
                node = node.setdefault(name, {}) if isinstance(node, dict) else None
            if isinstance(node, dict):   # a malformed parent is config_from_dict's to report
                node.setdefault(leaf, value)
    return config_from_dict(config_type, values, where)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg, prefix: str = "") -> dict[str, object]:
    """Dotted name -> value for every leaf field of a (nested) dataclass instance."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def field_hints(config_type, prefix: str = "") -> dict[str, object]:
    """Dotted name -> type hint for every leaf field of a config class."""
    out: dict[str, object] = {}
    for name, hint in _hints(config_type).items():
        inner, _ = _strip_optional(hint)
        if dataclasses.is_dataclass(inner):
            out.update(field_hints(inner, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = hint
    return out


def parse_text_value(hint, text: str, key: str):
    """A command-line string as a value of type ``hint`` (JSON syntax accepted for lists)."""
    inner, optional = _strip_optional(hint)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    if inner is str:
        return text
    if inner is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"--set {key}: expected true or false (got {text!r})")
    try:
        value = json.loads(text)
    except ValueError:
        value = [v.strip() for v in text.split(",")] if typing.get_origin(inner) is tuple else text
    return _check_value(hint, value, key)


def apply_overrides(cfg, overrides: dict[str, object]):
    """A copy of ``cfg`` with dotted-name overrides applied (values already typed, or strings from
    the command line). Unknown keys: one-line TalksplatError listing close matches."""
    hints = field_hints(type(cfg))
    values = config_to_dict(cfg)
    for key, value in overrides.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=3, cutoff=0.6) or \
                [k for k in hints if key.split(".")[-1] in k][:3]
            hint_text = f"; did you mean {', '.join(close)}?" if close else "; `talksplat recipes NAME` lists them"
            raise UsageError(f"unknown setting {key!r}{hint_text}")
        try:
            typed = parse_text_value(hints[key], value, key) if isinstance(value, str) else _check_value(hints[key], value, key)
        except TalksplatError as exc:
            # _check_value's errors are runtime failures when a checkpoint is read; here the user typed the value.
            raise UsageError(str(exc)) from exc
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = list(typed) if isinstance(typed, tuple) else typed
    return config_from_dict(type(cfg), values)


def overrides_from_file(path: Path) -> dict[str, object]:
    """Dotted-name settings from a JSON or TOML file with the config's nesting."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        tree = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'} "
                         f"({exc})") from exc
    if not isinstance(tree, dict):
        raise UsageError(f"config file {path} must hold an object of settings")
    return _flatten_tree(tree)


def _flatten_tree(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten_tree(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(saved, wanted) -> list[tuple[str, object, object]]:
    """(dotted name, saved value, wanted value) for every leaf that differs."""
    a, b = flatten(saved), flatten(wanted)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def describe_fields(cfg) -> list[str]:
    """``key = default`` lines for help texts."""
    return [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in flatten(cfg).items()]
