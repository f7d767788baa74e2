# The gateway as an operator runs it: a systemd unit systemd-analyze accepts, installed with its
# own system user, folders and broker password by `vigil gateway install-service`; the gateway
# running as that user on what was installed; one gateway per data folder.
import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from configparser import ConfigParser
from pathlib import Path

import pytest

import debian_mosquitto
import vigil_protocol as p
from gateway_harness import GatewayProcess, key_for, wait_for
from vigil_gateway import broker_config, config, service_install
from vigil_tools.broker import free_port

VIGIL_EXE = str(Path(sys.executable).parent / "vigil")
A = 0x0000000A


def _unit(path):
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def _verify(unit_path):
    """systemd-analyze verify's complaints about the unit (empty: none)."""
    result = subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True,
                            text=True, timeout=60)
    return (result.returncode, (result.stdout + result.stderr).strip())


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


@needs_systemd_analyze
def test_the_unit_is_hardened_and_systemd_accepts_it(tmp_path):
    unit = tmp_path / service_install.UNIT_NAME
    unit.write_text(service_install.unit_text(VIGIL_EXE, "/etc/vigil/gateway.toml"))
    assert _verify(unit) == (0, "")
    service = _unit(unit)["Service"]
    assert service["User"] == "vigil" and service["StateDirectory"] == "vigil"
    assert service["ExecStart"] == "%s gateway run --config /etc/vigil/gateway.toml" % VIGIL_EXE
    assert service["Restart"] == "always"
    for key, value in [("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                       ("CapabilityBoundingSet", ""), ("SystemCallFilter", "@system-service")]:
        assert service[key] == value, key
    # The check is real: a misspelt key or a missing program is reported.
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    assert "Unknown key" in _verify(unit)[1]
    unit.write_text(service_install.unit_text("/nonexistent/vigil", "/etc/vigil/gateway.toml"))
    assert _verify(unit)[0] != 0


@needs_systemd_analyze
def test_the_daily_backup_timer_and_its_unit_are_accepted_and_hardened(tmp_path):
    unit = tmp_path / service_install.BACKUP_UNIT_NAME
    timer = tmp_path / service_install.TIMER_NAME
    unit.write_text(service_install.backup_unit_text(VIGIL_EXE, "/etc/vigil/gateway.toml"))
    timer.write_text(service_install.timer_text())
    assert _verify(unit) == (0, "") and _verify(timer) == (0, "")
    service = _unit(unit)["Service"]
    assert service["Type"] == "oneshot" and service["User"] == "vigil"
    assert service["ExecStart"] == ("%s gateway backup --rotate --config "
                                    "/etc/vigil/gateway.toml" % VIGIL_EXE)
    for key, value in service_install.HARDENING:  # the gateway's own hardening
        assert service[key] == value, key
    assert service["StateDirectory"] == "vigil"  # where the backups go (ProtectSystem=strict)
    schedule = _unit(timer)["Timer"]
    assert (schedule["OnCalendar"], schedule["Persistent"], schedule["Unit"]) == (
        "daily", "true", service_install.BACKUP_UNIT_NAME)
    assert _unit(timer)["Install"]["WantedBy"] == "timers.target"
    # The check is real for the timer too.
    timer.write_text(timer.read_text().replace("OnCalendar=daily", "OnCalendar=dayly"))
    assert "Failed to parse calendar" in _verify(timer)[1]


def test_install_service_needs_root_and_says_so(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root here: the refusal is for other users")
    result = subprocess.run([VIGIL_EXE, "gateway", "install-service", "--root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "vigil: installing a service needs root (run it with sudo)\n"


@pytest.fixture
def service_user():
    """A system user made for this test by install-service, removed after it."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd: install-service makes a system user")
    name = "vigil-t%s" % uuid.uuid4().hex[:8]
    yield name
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


def _mode_owner(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(
        st.st_gid).gr_name


@needs_systemd_analyze
def test_install_service_makes_the_user_folders_config_and_unit(service_user):
    # Staged in a folder Debian's broker user and the new user can reach (tmp_path is root's).
    root = Path(tempfile.mkdtemp(prefix="vigil-root-"))
    os.chmod(root, 0o755)
    try:
        out = subprocess.run([VIGIL_EXE, "gateway", "install-service", "--root", str(root),
                              "--user", service_user], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "made system user %s" % service_user in out.stdout
        user = pwd.getpwnam(service_user)
        assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
        gid = broker_config.broker_gid()
        if gid is not None:
            assert service_user in grp.getgrgid(gid).gr_mem
        etc, state = root / "etc" / "vigil", root / "var" / "lib" / "vigil"
        assert _mode_owner(state) == (0o700, service_user, service_user)
        assert _mode_owner(etc / "secrets") == (0o700, service_user, service_user)
        assert _mode_owner(etc / "secrets" / "mqtt-password") == (0o600, service_user,
                                                                    service_user)
        password = (etc / "secrets" / "mqtt-password").read_text()
        assert len(password.strip()) >= 24
        if gid is not None:
            assert _mode_owner(etc / "broker") == (0o2750, service_user, "mosquitto")
        cfg = config.load(str(etc / "gateway.toml"))
        assert cfg.gateway.data_dir == "/var/lib/vigil/gateway"
        assert cfg.mqtt.password_file == "/etc/vigil/secrets/mqtt-password"
        assert cfg.mqtt.username == "%s-gateway" % service_user
        unit = root / "etc" / "systemd" / "system" / service_install.UNIT_NAME
        assert _verify(unit) == (0, "")
        service = _unit(unit)["Service"]
        assert (service["User"], service["Group"]) == (service_user, service_user)
        assert service["ExecStart"] == "%s gateway run --config /etc/vigil/gateway.toml" % (
            VIGIL_EXE)
        units = root / "etc" / "systemd" / "system"
        backup_unit, timer = (units / service_install.BACKUP_UNIT_NAME,
                              units / service_install.TIMER_NAME)
        assert _verify(backup_unit) == (0, "") and _verify(timer) == (0, "")
        assert _unit(backup_unit)["Service"]["User"] == service_user
        assert "enable --now vigil-gateway %s" % service_install.TIMER_NAME in out.stdout
        # Again: nothing that exists changes.
        (etc / "gateway.toml").write_text((etc / "gateway.toml").read_text() + "# mine\n")
        out = subprocess.run([VIGIL_EXE, "gateway", "install-service", "--root", str(root),
                              "--user", service_user], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "kept system user" in out.stdout and "kept %s" % (etc / "gateway.toml") in \
            out.stdout
        assert (etc / "gateway.toml").read_text().endswith("# mine\n")
        assert (etc / "secrets" / "mqtt-password").read_text() == password
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(debian_mosquitto.skip_reason() is not None,
                    reason=str(debian_mosquitto.skip_reason()))
def test_the_gateway_runs_as_its_user_on_what_was_installed(service_user, devices):
    # What the unit would run, as the unit's user (systemd does not run here): the installed
    # config (its folders moved into the staging folder), the broker files written by that
    # user, Debian's broker reading them, a wearable's alarm acknowledged.
    root = Path(tempfile.mkdtemp(prefix="vigil-root-"))
    os.chmod(root, 0o755)
    broker, gateway = None, None
    try:
        out = subprocess.run([VIGIL_EXE, "gateway", "install-service", "--root", str(root),
                              "--user", service_user], check=True, capture_output=True,
                             text=True)
        vigil = _vigil_for(service_user, out.stderr)
        etc = root / "etc" / "vigil"
        port, http_port = free_port(), free_port()
        conf = etc / "gateway.toml"
        conf.write_text(conf.read_text().replace('"/var/lib/vigil', '"%s/var/lib/vigil' % root)
                        .replace('"/etc/vigil', '"%s' % etc)
                        + "port = %d\n[http]\nport = %d\n" % (port, http_port))
        key_file = etc / "a.keyhex"
        key_file.write_text(key_for(A).hex())
        pw_file = etc / "a.pw"
        pw_file.write_text("password-of-a")
        for f in (key_file, pw_file):
            shutil.chown(f, service_user)

        def as_user(*args, check=True):
            return subprocess.run(["runuser", "-u", service_user, "--", *vigil, "gateway", *args,
                                   "--config", str(conf)], capture_output=True, text=True,
                                  check=check, timeout=60)

        as_user("device", "add", "%08x" % A, "--key-file", str(key_file),
                "--mqtt-password-file", str(pw_file))
        as_user("broker-config", "--out", str(etc / "broker"), "--listen",
                "127.0.0.1:%d" % port)
        for name in ("passwords", "acl", "vigil.conf"):  # the user is in group mosquitto
            assert _mode_owner(etc / "broker" / name) == (0o640, service_user, "mosquitto")
        conf_d = root / "conf.d"
        conf_d.mkdir(mode=0o755)
        (conf_d / "vigil.conf").symlink_to(etc / "broker" / "vigil.conf")
        broker = debian_mosquitto.DebianMosquitto(str(conf_d), port).start()
        gateway = subprocess.Popen(["runuser", "-u", service_user, "--", *vigil, "gateway",
                                    "run", "--config", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        probe = GatewayProcess(root / "probe", port)
        probe.http_port = http_port
        wait_for(lambda: _healthy(probe), 20, "the gateway to be healthy")
        a = devices(port, A, key_for(A), password="password-of-a")
        a.publish(a.alarm(p.SOS))
        a.wait_acked([1])
        db = root / "var" / "lib" / "vigil" / "gateway" / "gateway.db"
        assert _mode_owner(db) == (0o600, service_user, service_user)
        # The daily backup, as its unit runs it: that user, that command, beside the data.
        unit = root / "etc" / "systemd" / "system" / service_install.BACKUP_UNIT_NAME
        command = _unit(unit)["Service"]["ExecStart"].split()
        assert command[:2] == [VIGIL_EXE, "gateway"] and command[-2] == "--config"
        subprocess.run(["runuser", "-u", service_user, "--", *vigil, *command[1:-1], str(conf)],
                       check=True, capture_output=True, timeout=60)
        [made] = list((root / "var" / "lib" / "vigil" / "backups").iterdir())
        assert _mode_owner(made) == (0o700, service_user, service_user)
        assert _mode_owner(made / "gateway.db") == (0o600, service_user, service_user)
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(10)
        if broker is not None:
            broker.stop()
        shutil.rmtree(root)


def _vigil_for(user, install_stderr):
    """A vigil command line the user can run: this one, or, where this Python lives in a home
    folder the user cannot read (install-service warned of it; an installation under /opt
    has no such problem), the system's Python 3.11 on the same packages."""
    if subprocess.run(["runuser", "-u", user, "--", VIGIL_EXE, "--help"],
                      capture_output=True).returncode == 0:
        return [VIGIL_EXE]
    assert "under a home folder" in install_stderr
    import sysconfig

    root = Path(__file__).resolve().parents[2]
    path = ":".join([sysconfig.get_paths()["purelib"]] + [
        str(root / d) for d in ("protocol", "gateway", "tools", "responder")])
    command = ["env", "PYTHONPATH=" + path, "/usr/bin/python3", "-m", "vigil_tools.cli"]
    if subprocess.run(["runuser", "-u", user, "--", *command, "--help"],
                      capture_output=True).returncode != 0:
        pytest.skip("no Python the service user can run (%s is in a folder it cannot read)"
                    % os.path.realpath(sys.executable))
    return command


def _healthy(gw):
    try:
        return gw.get("/healthz")[0] == 200
    except OSError:
        return False


def test_a_second_gateway_on_the_same_data_dir_is_refused(mosquitto, gateway_factory, tmp_path):
    first = gateway_factory(mosquitto.port).start()
    data_dir = first.dir / "data"
    # Its own config and HTTP port: only the data folder is shared.
    second = gateway_factory(mosquitto.port, gateway={"data_dir": str(data_dir)})
    result = second.cli("run", check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "vigil: gateway.data_dir: another gateway (pid %d) is running on %s: one gateway per "
        "data folder" % (first.proc.pid, data_dir))
    assert "Traceback" not in result.stderr
    assert first.get("/healthz")[0] == 200
    # Once the first is gone (even killed: the kernel drops the lock), the second may run.
    first.kill()
    second.start()
