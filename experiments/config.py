"""An experiment's flat config: a dataclass, overridden by JSON files and then by ``--name value`` options.

    python -m experiments.criteo_dlrm experiments/configs/second_generator.json --seeds=1,2,3 --steps 100

Every field of the script's config dataclass is one option, spelled ``--name value`` or ``--name=value`` (dashes or
underscores); a bool is a bare ``--name`` or ``--no-name``. Positional arguments are JSON files of
``{"name": value}``, applied first, in order (JSON rather than Python: a config is data, loads without running
code, and has the same keys as the options). ``quick`` sizes apply to the fields neither a file nor an option set.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Type, TypeVar

C = TypeVar("C")


def _value_type(annotation: Any) -> type:
    """``int`` of ``int`` and of ``Optional[int]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _coerce(name: str, value: Any, kind: type) -> Any:
    """A JSON value as the field's type (a list for a comma-list string field; an int for a float field)."""
    if value is None:
        return None
    if kind is str and isinstance(value, list):
        return ",".join(str(v) for v in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
    return value


def _dashed(option: str) -> str:
    name, sep, value = option.partition("=")
    return name.replace("_", "-") + sep + value


def parse_config(cls: Type[C], argv: Optional[Sequence[str]], description: str,
                 quick: Mapping[str, Any] = (), check: Optional[Callable[[C], None]] = None) -> C:
    """``cls()`` with the JSON files and options of ``argv`` (``sys.argv[1:]`` if None) applied.

    ``quick``: field -> value used when the config's ``quick`` is set and the field was not given.
    ``check``: raises ``ValueError`` for a bad config; it exits with the message, as a bad option does.
    """
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("config_files", nargs="*", metavar="CONFIG.json", help="JSON files of {name: value}")
    defaults = cls()
    for field in dataclasses.fields(cls):
        kind = _value_type(hints[field.name])
        flag, default = "--" + field.name.replace("_", "-"), getattr(defaults, field.name)
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=f"(default {default})")
        else:
            parser.add_argument(flag, dest=field.name, type=kind, default=argparse.SUPPRESS, metavar=kind.__name__,
                                help=f"(default {default!r})")
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [_dashed(a) if a.startswith("--") else a for a in argv]  # --batch_size=8 is --batch-size=8
    options = vars(parser.parse_intermixed_args(argv))
    values: Dict[str, Any] = {}
    for path in options.pop("config_files"):
        try:
            with open(path) as handle:
                loaded = json.load(handle)
            for key, value in loaded.items():
                name = key.replace("-", "_")
                if name not in hints:
                    raise ValueError(f"unknown option {key!r}")
                values[name] = _coerce(key, value, _value_type(hints[name]))
        except (OSError, ValueError, AttributeError) as error:
            parser.error(f"{path}: {error}")
    values.update(options)
    if values.get("quick", getattr(defaults, "quick", False)):
        values = {**{k: v for k, v in dict(quick).items() if k not in values}, **values}
    config = dataclasses.replace(defaults, **values)
    if check is not None:
        try:
            check(config)
        except ValueError as error:
            parser.error(str(error))
    return config
