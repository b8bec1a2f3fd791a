"""`yidi serve --config FILE`: every flag settable in a TOML file, the command line winning, mistakes one line.

Read over the real parser of `yidi serve` (engine.cli.parse_args), so a flag added
to `serve` is checked here without an edit: the test that sets every flag from a
file builds its file from the parser's own list.
"""
from __future__ import annotations

import argparse
import os

import pytest

from engine.cli import _add_serve, parse_args
from engine.hub.limits import Limits
from engine.tools.config import ConfigError, apply_config
from test_startup import refused

BASE = 'world = "/w"\ndata = "/d"\nno-auth = true\ntcp = "127.0.0.1:9000"\n'


def config(tmp_path, text: str, name: str = "yidi.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_file_gives_the_flags_and_the_command_line_wins(tmp_path):
    path = config(tmp_path, BASE + 'batch-max = 512\nbatch_window_ms = 2\nrequest-log = "errors"\n'
                                   'log-file = "/var/log/yidi/yidi.jsonl"\n')
    a = parse_args(["serve", "--config", path])
    assert (a.world, a.data, a.no_auth, a.tcp) == ("/w", "/d", True, "127.0.0.1:9000")
    assert a.batch_max == 512 and a.batch_window_ms == 2.0 and type(a.batch_window_ms) is float
    assert a.request_log == "errors" and a.log_file == "/var/log/yidi/yidi.jsonl"
    assert a.queue_max == Limits().queue_max  # not in the file: the flag's own default
    a = parse_args(["serve", "--batch-max", "64", "--config", path, "--world", "/other", "--request-log", "all"])
    assert (a.batch_max, a.world, a.request_log, a.data) == (64, "/other", "all", "/d")
    # --world and --data are required: from the file or from the command line.
    with pytest.raises(SystemExit):
        parse_args(["serve", "--config", config(tmp_path, "no-auth = true\n", "partial.toml")])
    a = parse_args(["serve", "--config", config(tmp_path, "no-auth = true\n", "partial.toml"), "--world", "/w",
                    "--data", "/d"])
    assert a.no_auth and a.world == "/w"


def _value_for(action: argparse.Action):
    """A value of the right TOML type for a flag, unlike its default; the same value as the parser gives it."""
    if action.nargs == 0:
        return True, True
    if action.choices:
        pick = [c for c in action.choices if c != action.default][0]
        return pick, pick
    if action.type is int:
        return 7, 7
    if action.type is float:
        return 2.5, 2.5
    return "/some/where", "/some/where"


def test_every_flag_of_serve_is_a_key(tmp_path):
    parser = _add_serve(argparse.ArgumentParser().add_subparsers())
    lines, want = [], {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or longs[0] in ("--help", "--config"):
            continue
        value, parsed = _value_for(action)
        key = longs[0][2:]
        lines.append(f"{key} = {'true' if value is True else repr(value).replace(chr(39), chr(34))}")
        want[action.dest] = parsed
    assert len(want) >= 30  # the listeners, keys, TLS, the log and every limit
    a = parse_args(["serve", "--config", config(tmp_path, "\n".join(lines) + "\n")])
    assert {dest: getattr(a, dest) for dest in want} == want


@pytest.mark.parametrize("text, line", [
    ("batchmax = 5\n", "batchmax: not a flag of `yidi serve` (did you mean batch-max?)"),
    ("config = \"other.toml\"\n", "config: not a flag of `yidi serve`"),
    ("help = true\n", "help: not a flag of `yidi serve`"),
    ("[limits]\nbatch-max = 5\n", "limits: not a flag of `yidi serve`"),
    ('batch-max = "256"\n', "batch-max: wants an integer, got a string ('256')"),
    ("batch-max = 2.5\n", "batch-max: wants an integer, got a number (2.5)"),
    ("batch-max = true\n", "batch-max: wants an integer, got a boolean (True)"),
    ("batch-window-ms = \"1\"\n", "batch-window-ms: wants a number, got a string ('1')"),
    ('no-auth = "yes"\n', "no-auth: wants true or false, got a string ('yes')"),
    ("tcp = 9000\n", "tcp: wants a string, got an integer (9000)"),
    ('tcp = ["a", "b"]\n', "tcp: wants a string, got an array (['a', 'b'])"),
    ('loop = "tokio"\n', "loop: 'tokio' is not one of uvloop, asyncio"),
    ('request-log = "some"\n', "request-log: 'some' is not one of all, errors, off"),
    ("batch-max = 5\nbatch_max = 6\n", "batch_max: the same flag as batch-max: give one"),
])
def test_a_bad_key_or_value_is_one_line_naming_the_file_and_the_key(tmp_path, text, line):
    path = config(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_args(["serve", "--config", path])
    assert str(e.value) == f"{path}: {line}"


def test_a_file_that_cannot_be_read(tmp_path):
    (tmp_path / "a-folder").mkdir()
    bad_toml = config(tmp_path, "world = /w\n", "bad.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('world = "/w\u00e9"\n'.encode("latin-1"))
    for path, line in (
        (str(tmp_path / "nope.toml"), "No such file or directory"),
        (str(tmp_path / "a-folder"), "Is a directory"),
        (bad_toml, "not TOML: Invalid value (at line 1, column 9)"),
        (str(latin1), "not UTF-8 text: invalid continuation byte at byte 11"),
    ):
        with pytest.raises(ConfigError) as e:
            apply_config(_add_serve(argparse.ArgumentParser().add_subparsers()), path)
        assert str(e.value).startswith(f"{path}: {line}"), str(e.value)


def test_yidi_serve_refuses_a_bad_config_in_one_line(tmp_path):
    """As the operator meets it: `yidi serve --config`, a non-zero exit, one line, nothing made."""
    data = str(tmp_path / "data")
    unknown = config(tmp_path, f'data = "{data}"\nworld = "/w"\nno-auth = true\ntcp = ":0"\nbatchmax = 5\n')
    assert refused("serve", "--config", unknown) == (f"yidi: --config {unknown}: batchmax: not a flag of "
                                                     "`yidi serve` (did you mean batch-max?)")
    missing = str(tmp_path / "missing.toml")
    assert refused("serve", "--config", missing) == f"yidi: --config {missing}: No such file or directory"
    unreadable = config(tmp_path, BASE, "unreadable.toml")
    if os.geteuid() != 0:  # modes do not stop root
        os.chmod(unreadable, 0)
        assert refused("serve", "--config", unreadable) == f"yidi: --config {unreadable}: Permission denied"
    assert not os.path.exists(data)
