"""deploy/: the systemd unit, the container file and the example configurations, read with the real parser.

What can be checked on a machine without systemd running or a container engine:
`systemd-analyze verify` on the unit (when installed), the unit's command line and
the example configuration through `yidi serve`'s own parser, the container file's
ports, volume and health check against its configuration, and sd_notify against
a real socket. Building the image is not part of the tests (README, "Running a
hub in production").
"""
from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, VECTOR_WORLD
from engine.cli import parse_args
from engine.hub.limits import Limits

DEPLOY = os.path.join(ROOT, "deploy")
UNIT = os.path.join(DEPLOY, "yidi.service")
EXAMPLE = os.path.join(DEPLOY, "yidi.toml")
CONTAINER_TOML = os.path.join(DEPLOY, "container.toml")
CONTAINERFILE = os.path.join(DEPLOY, "Containerfile")
WAIT_S = 60.0


def unit() -> configparser.ConfigParser:
    u = configparser.ConfigParser(interpolation=None, strict=True)
    u.optionxform = str  # systemd's keys are case-sensitive
    u.read(UNIT)
    return u


def serve_args_of(command: list[str], config: str) -> object:
    """`yidi serve ...` of a unit or an image, parsed by the real parser with `config` for its --config."""
    assert command[:3] == ["serve", "--config", "/etc/yidi/yidi.toml"], command
    return parse_args(["serve", "--config", config, *command[3:]])


def test_the_unit_verifies():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    exec_start = shlex.split(unit()["Service"]["ExecStart"])[0]
    yidi = shutil.which("yidi", path=os.path.dirname(sys.executable)) or shutil.which("yidi")
    if yidi is None:
        pytest.skip("no yidi script installed (pip install -e .)")
    with open(UNIT) as f:
        text = f.read().replace(exec_start, yidi)
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"yidi-unit-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    try:
        path = os.path.join(d, "yidi.service")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([analyze, "verify", "--man=no", path], capture_output=True, text=True, timeout=WAIT_S)
    finally:
        shutil.rmtree(d)
    # Unknown keys and bad values are warnings on stderr, with exit code 0: nothing may be said.
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_the_unit_runs_yidi_serve_with_the_example_config_and_what_it_needs():
    s = unit()["Service"]
    command = shlex.split(s["ExecStart"])
    assert os.path.basename(command[0]) == "yidi"
    a = serve_args_of(command[1:], EXAMPLE)
    assert a.world and a.data and a.keys and not a.no_auth and a.tcp and a.http
    assert a.admin.startswith("127.0.0.1:")
    writable = s["ReadWritePaths"].split()
    state = f"/var/lib/{s['StateDirectory']}"
    assert state in writable and f"/var/log/{s['LogsDirectory']}" in writable
    for path in (a.data, a.log_file):  # what the hub writes, under ProtectSystem=strict
        assert any(path.startswith(w + "/") for w in writable), path
    assert a.keys.startswith(f"/etc/{s['ConfigurationDirectory']}/")
    assert (s["Type"], s["User"], s["Restart"], s["ProtectSystem"], s["NoNewPrivileges"]) == (
        "notify", "yidi", "on-failure", "strict", "true")
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["RestartPreventExitStatus"] == "2"  # a start-up mistake (engine.cli) would only fail again
    assert int(s["LimitNOFILE"]) > Limits().connections_max + 64
    assert float(s["TimeoutStopSec"]) > a.drain_timeout_s
    assert s["Environment"] == "TZ=Asia/Shanghai"


def _commented_settings(path: str) -> list[str]:
    """The example's commented-out `# key = value` lines, uncommented."""
    with open(path) as f:
        return [f"{m[1]} = {m[2]}" for m in (re.match(r"# ([a-z][a-z-]*) = (.+?)(?:\s+#.*)?$", ln.strip()) for ln in f)
                if m]


def test_the_example_config_is_valid_and_its_commented_limits_are_the_defaults(tmp_path):
    a = parse_args(["serve", "--config", EXAMPLE])
    assert a.log_file and a.request_log == "all" and a.log_level == "info"
    settings = [ln for ln in _commented_settings(EXAMPLE) if not ln.startswith("no-auth")]
    with open(EXAMPLE) as f:
        full = f.read() + "\n".join(settings) + "\n"
    path = tmp_path / "all.toml"
    path.write_text(full)
    a = parse_args(["serve", "--config", str(path)])  # every commented key is a flag, of the right type
    limits = Limits()
    named = {ln.split(" = ")[0].replace("-", "_") for ln in settings}
    assert {f for f in vars(limits)} <= named, "a limit missing from deploy/yidi.toml"
    for name, default in vars(limits).items():
        assert getattr(a, name) == default, name


def test_the_container_file_serves_its_config_with_its_ports_volume_and_health_check():
    with open(CONTAINERFILE) as f:
        text = f.read().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    ins = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]
    froms = [v.split()[0] for k, v in ins if k == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    for k, v in ins:
        if k == "COPY" and not v.startswith("--from"):
            for src in v.split()[:-1]:
                assert os.path.exists(os.path.join(ROOT, src)), src
    last = {k: v for k, v in ins}  # the run stage: the last of each
    assert last["USER"] not in ("root", "0")
    assert "pip wheel" in text and "COPY deploy/container.toml /etc/yidi/yidi.toml" in lines
    import json

    entry, cmd = json.loads(last["ENTRYPOINT"]), json.loads(last["CMD"])
    assert entry == ["yidi"]
    a = serve_args_of(cmd, CONTAINER_TOML)
    ports = {int(p) for p in last["EXPOSE"].split()}
    assert ports == {int(x.rsplit(":", 1)[1]) for x in (a.tcp, a.http, a.admin)}
    assert json.loads(last["VOLUME"]) == [a.data]
    health = last["HEALTHCHECK"]
    assert f"127.0.0.1:{a.admin.rsplit(':', 1)[1]}/healthz" in health
    assert not a.log_file  # the log goes to stderr: the engine's logs
    assert "ENV TZ=Asia/Shanghai" in text


def test_the_hub_tells_systemd_when_it_is_ready_and_when_it_stops(tmp_path):
    """Type=notify: READY=1 once it listens with its store open, STOPPING=1 at SIGTERM, on a real socket."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(WAIT_S)
        p = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--world", VECTOR_WORLD, "--data",
                              str(tmp_path / "data"), "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--no-auth"],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "NOTIFY_SOCKET": path},
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            ready = sock.recv(4096).decode().splitlines()
            out = p.stdout.readline()
            assert ready[0] == "READY=1" and ready[1].startswith("STATUS=serving tcp 127.0.0.1:"), ready
            assert out.startswith("yidi: tcp listening on")  # the hub said it listens before it said ready
            p.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode() == "STOPPING=1"
            assert p.wait(WAIT_S) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(WAIT_S)
