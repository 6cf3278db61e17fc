"""The attention registry: a name -> (config dataclass, part class) table, and the config parsing.

No torch here: a name, its config and the parsing of a JSON config work without it (CI has no
torch). A built-in part is declared by its import path and imported on first instantiation;
``register_attention`` (a decorator on an ``Attention`` subclass) ties a name to a class directly.
As in xFormers, ``build_attention(config)`` takes a dict, a JSON string or a config instance,
and constructs the part with the config's fields as keyword arguments.
"""
import ast
import dataclasses
import importlib
import json
import math
import re
import typing
from typing import Any, Dict, Optional, Type, Union


class ConfigError(ValueError):
    """A config names no registered part, or a field the part's config lacks, or a bad value."""


@dataclasses.dataclass
class _Entry:
    config: Type
    cls: Optional[type] = None   # the part class once known
    path: Optional[str] = None   # "module:Class" of a built-in not imported yet

    def part_class(self):
        if self.cls is None:
            module, _, name = self.path.partition(":")
            importlib.import_module(module)   # its @register_attention fills self.cls
            if self.cls is None:
                self.cls = getattr(importlib.import_module(module), name)
        return self.cls


_REGISTRY: Dict[str, _Entry] = {}


def _declare(name: str, config: Type, path: str):
    """A built-in part: its config now, its class (which needs torch) when first built."""
    _REGISTRY[name] = _Entry(config=config, path=path)


def register_attention(name: str, config: Type):
    """Decorator: ``@register_attention("nystrom", NystromConfig)`` on an ``Attention`` subclass
    whose constructor takes the config's fields as keyword arguments (and extra ``*args,
    **kwargs``). ``config`` is a dataclass with at least ``name`` (``AttentionConfig``'s fields)."""
    if not dataclasses.is_dataclass(config) or "name" not in _field_names(config):
        raise ConfigError(f"register_attention({name!r}): the config {config!r} is not a dataclass with a 'name' field")

    def wrap(cls):
        old = _REGISTRY.get(name)
        if old is not None and old.path is not None and old.config is not config:
            raise ConfigError(f"register_attention({name!r}): the name is a built-in part's, with config {old.config.__name__}")
        if old is not None and old.cls is not None and old.cls is not cls and old.cls.__qualname__ != cls.__qualname__:
            raise ConfigError(f"register_attention({name!r}): the name is taken by {old.cls.__module__}.{old.cls.__qualname__}")
        _REGISTRY[name] = _Entry(config=config, cls=cls, path=old.path if old else None)
        cls.config_class, cls.part_name = config, name
        return cls

    return wrap


def registered_attentions():
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def attention_config_class(name: str):
    return _entry(name).config


def attention_class(name: str):
    """The part class registered under ``name`` (imports torch for a built-in)."""
    return _entry(name).part_class()


def _entry(name):
    if name not in _REGISTRY:
        raise ConfigError(f"unknown attention {name!r}; registered: {', '.join(registered_attentions())}")
    return _REGISTRY[name]


def _field_names(config):
    return [f.name for f in dataclasses.fields(config)]


def _describe_fields(config):
    hints = typing.get_type_hints(config)
    return ", ".join(f"{f.name}: {_type_name(hints.get(f.name, Any))}" for f in dataclasses.fields(config))


def _type_name(tp):
    if typing.get_origin(tp) is not None or not hasattr(tp, "__name__"):
        return str(tp).replace("typing.", "")
    return tp.__name__


def _as_dict(config: Union[str, dict, Any]) -> dict:
    """A JSON string (FairSeq's ``'{"name": "linformer", "seq_len": "256"}'``; a Python dict
    literal too, as FairSeq's ``eval_str_dict`` takes), a dict, or a config instance."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if isinstance(config, str):
        text = config
        if len(text) > _MAX_CONFIG_CHARS:
            raise ConfigError(f"attention config is {len(text)} characters, more than {_MAX_CONFIG_CHARS}")
        try:
            config = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as json_error:
            try:
                config = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise ConfigError(f"attention config {_clip(text)} is neither JSON nor a dict literal: {json_error}") from None
        except RecursionError:
            raise ConfigError(f"attention config {_clip(text)} is nested too deeply") from None
    if not isinstance(config, dict):
        raise ConfigError(f"attention config must be a dict, a JSON object string or a config dataclass, not {type(config).__name__}")
    if "name" not in config:
        raise ConfigError(f"attention config {_clip(repr(config))} has no 'name'; registered: {', '.join(registered_attentions())}")
    bad_keys = [k for k in config if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"attention config keys must be strings, got {_clip(repr(bad_keys))}")
    if not isinstance(config["name"], str):
        raise ConfigError(f"attention config 'name' must be a string, got {_clip(repr(config['name']))}")
    return dict(config)


_MAX_CONFIG_CHARS = 1 << 20


def _clip(text, n=200):
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def _no_duplicate_keys(pairs):
    """json.loads' object hook: a key given twice is an error, not the last one silently winning."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(f"attention config: key {k!r} appears twice in one object")
        out[k] = v
    return out


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _convert(value, tp, where):
    """``value`` as the field's type: numeric strings become numbers where the field is numeric
    (FairSeq's ``"seq_len": "256"``); "true"/"false" become bools; Optional[X] takes None."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where}={value!r}: None is not allowed")
    if tp is Any or tp is object:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ConfigError(f"{where}={value!r} is not a bool")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value.strip())  # not int()'s "12_8" or other Python literals
        raise ConfigError(f"{where}={value!r} is not an int")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} is not a float")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value.strip())  # not float()'s "nan", "inf" or "1_0"
        raise ConfigError(f"{where}={value!r} is not a finite float")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}={value!r} is not a str")
    return value   # a type we do not check (a tensor layout, a tuple): the part checks it


def parse_config(config: Union[str, dict, Any]):
    """The config dataclass instance for ``config`` (a dict, a JSON string or a config), its
    values converted to the fields' types. Unknown names list the registered names; unknown,
    missing or bad fields list the config's fields."""
    fields = _as_dict(config)
    name = fields["name"]
    cls = _entry(name).config
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(f"{name}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          f"{cls.__name__} has: {_describe_fields(cls)}")
    values = {}
    for key, value in fields.items():
        try:
            values[key] = _convert(value, hints.get(key, Any), f"{name}.{key}")
        except ConfigError as e:
            raise ConfigError(f"{e} ({cls.__name__} has: {_describe_fields(cls)})") from None
    missing = [f.name for f in known.values() if f.name not in values
               and (f.metadata.get("required") or f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)]
    if missing:
        raise ConfigError(f"{name}: missing field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                          f"{cls.__name__} has: {_describe_fields(cls)}")
    return cls(**values)


def build_attention(config: Union[str, dict, Any]):
    """The part a config names, constructed with its fields: ``build_attention('{"name":
    "linformer", "seq_len": "256"}')``. Imports torch (a part is a torch module)."""
    parsed = parse_config(config)
    return _entry(parsed.name).part_class().from_config(parsed)
