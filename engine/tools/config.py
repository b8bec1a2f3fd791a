"""A command's flags from a TOML file (`yidi serve --config yidi.toml`; README, "Running a hub in production").

Read over the command's own argparse parser, so that every flag it has is a key,
and a flag added to the command is a key without an edit here: the key is the
flag's long name without its dashes (`batch-max`; `batch_max`, its argparse
dest, is the same key). A value of the file becomes the flag's default, so a
flag given on the command line wins. The file's values are checked as strictly
as the command line's, and more: a key the command does not have, a value of the
wrong TOML type or outside the flag's choices, a file that cannot be read or is
not TOML are refused with one line naming the file and the key.

Paths in the file are taken as the command line takes them: relative to the
working directory the command starts in (give absolute ones).
"""
from __future__ import annotations

import argparse
import difflib
import tomllib
from typing import Any

CONFIG_FLAG = "--config"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message is one line naming the file (and the key)."""


def config_path(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """The value of --config among a command's arguments (as the parser would read it), or None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(CONFIG_FLAG)
    known, _ = pre.parse_known_args(args)
    return known.config


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's settable flags by key: the long option without its leading dashes, and the same with
    underscores for its inner dashes (the argparse dest)."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or CONFIG_FLAG in action.option_strings:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                out[option[2:]] = action
                out.setdefault(option[2:].replace("-", "_"), action)
    return out


def _kind(action: argparse.Action) -> str:
    if action.nargs == 0:  # store_true, store_false, store_const
        return "bool"
    if action.nargs not in (None, "?"):
        return "list"
    if action.type is int:
        return "int"
    if action.type is float:
        return "float"
    return "str"


_WANTS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}
_TOML_TYPE = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
              dict: "a table"}


def _value(key: str, action: argparse.Action, value: Any) -> Any:
    """The flag's value for the file's `value`, or ConfigError (the caller adds the file's name)."""
    kind = _kind(action)
    if kind == "list":
        raise ConfigError(f"{key}: a flag of several values: give it on the command line")
    got = _TOML_TYPE.get(type(value), type(value).__name__)
    ok = {"bool": type(value) is bool, "int": type(value) is int,
          "float": type(value) in (int, float), "str": type(value) is str}[kind]
    if not ok:
        raise ConfigError(f"{key}: wants {_WANTS[kind]}, got {got} ({value!r})")
    if kind == "bool":
        return action.const if value else action.default  # false is the flag's absence
    if kind == "float":
        value = float(value)
    elif kind == "str" and action.type not in (None, str):  # a flag's own parser (argparse's `type`)
        try:
            value = action.type(value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            raise ConfigError(f"{key}: {value!r}: {e}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def read_config(path: str) -> dict[str, Any]:
    """The TOML file at `path` as a table, or ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}") from None


def apply_config(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """Make the file's values the defaults of `parser`'s flags (the command line still wins); a required
    flag the file gives is no longer required. Returns the values by dest. ConfigError: one line."""
    table = read_config(path)
    actions = _actions(parser)
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in table.items():
        action = actions.get(key)
        if action is None:
            near = difflib.get_close_matches(key.replace("_", "-"), [k for k in actions if "_" not in k], n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{path}: {key}: not a flag of `{parser.prog}`{hint}")
        if action.dest in keys:
            raise ConfigError(f"{path}: {key}: the same flag as {keys[action.dest]}: give one")
        keys[action.dest] = key
        try:
            values[action.dest] = _value(key, action, value)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for action in parser._actions:
        if action.dest in values:
            action.required = False
    # One of a required group given by the file (`data` or `store`): the group is given.
    for group in parser._mutually_exclusive_groups:
        if group.required and any(a.dest in values for a in group._group_actions):
            group.required = False
    parser.set_defaults(**values)
    return values
