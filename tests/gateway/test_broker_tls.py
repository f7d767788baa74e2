# TLS at the broker, as an operator sets it up: `vigil gateway tls-setup` makes the site CA, the
# broker's certificate and the wearables' CA file; `broker-config --tls` makes every listener a
# TLS one (by default 8883 only). A real Mosquitto on those files takes TLS only, the gateway
# and a wearable provisioned with the CA file get through, and files that would lock the
# gateway out are refused.
import os
import shutil
import socket
import stat
import tempfile

import pytest
from cryptography import x509

import debian_mosquitto
import vigil_protocol as p
from gateway_harness import key_for, wait_for, write_secret
from vigil_gateway import broker_config, tls_setup
from vigil_tools.broker import Mosquitto, free_port

A = 0x0000000A
GATEWAY_USER = "vigil-gateway"


@pytest.fixture
def shared_dir():
    """A folder Debian's broker user can reach (tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="vigil-tls-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def _gateway(gateway_factory, tmp_path, port, host=None, **tls):
    write_secret(tmp_path / "gw.pw", "gateway-secret\n")
    sections = {"mqtt": {"username": GATEWAY_USER, "password_file": str(tmp_path / "gw.pw")}}
    if host:
        sections["mqtt"]["host"] = host
    if tls:
        sections["mqtt.tls"] = dict(enabled=True, **tls)
    gw = gateway_factory(port, **sections)
    gw.add_device(A, key_for(A), "password-of-a")
    return gw


def _listeners(conf):
    lines = open(conf).read().splitlines()
    return [lines[i:i + 5] for i, line in enumerate(lines) if line.startswith("listener ")]


def test_tls_setup_makes_a_ca_once_and_a_broker_certificate_each_time(gateway_factory,
                                                                       tmp_path):
    gw = gateway_factory(1883)
    out = gw.cli("tls-setup", "--out", str(tmp_path / "tls"), "--name", "broker.site.example",
                 "--name", "10.0.0.5").stdout
    assert "made the site CA" in out
    d = tmp_path / "tls"
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((d / "broker.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.site.example", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5",
                                                                             "127.0.0.1"]
    assert (d / "wearables-ca.pem").read_bytes() == (d / "ca.pem").read_bytes()
    # The keys: the CA's is this user's alone; the broker's also its group's (Debian's broker
    # reads it as user mosquitto).
    assert stat.S_IMODE(os.stat(d / "ca.key").st_mode) == 0o600
    key_mode = os.stat(d / "broker.key")
    if broker_config.broker_gid() is not None and os.geteuid() == 0:
        assert (stat.S_IMODE(key_mode.st_mode), key_mode.st_gid) == (
            0o640, broker_config.broker_gid())
    else:
        assert stat.S_IMODE(key_mode.st_mode) & 0o077 == 0
    # Again (a renewal): the CA every wearable trusts stays, the broker gets a new certificate.
    ca_before = (d / "ca.pem").read_bytes()
    out = gw.cli("tls-setup", "--out", str(d), "--name", "broker.site.example").stdout
    assert "kept the site CA" in out
    assert (d / "ca.pem").read_bytes() == ca_before
    renewed = x509.load_pem_x509_certificate((d / "broker.pem").read_bytes())
    assert renewed.serial_number != cert.serial_number
    renewed.verify_directly_issued_by(ca)
    # A CA key lost or broken is never replaced by a new CA.
    (d / "ca.key").write_text("not a key\n")
    result = gw.cli("tls-setup", "--out", str(d), check=False)
    assert result.returncode == 2 and "never replaced" in result.stderr
    assert "Traceback" not in result.stderr
    assert (d / "ca.pem").read_bytes() == ca_before


def test_with_tls_the_broker_listens_on_8883_only(gateway_factory, tmp_path):
    gw = gateway_factory(1883)
    gw.cli("tls-setup", "--out", str(tmp_path / "tls"))
    gw = _gateway(gateway_factory, tmp_path, 8883, ca_file=str(tmp_path / "tls" / "ca.pem"))
    gw.cli("broker-config", "--out", str(tmp_path / "broker"), "--tls", str(tmp_path / "tls"))
    conf = tmp_path / "broker" / "vigil.conf"
    assert _listeners(conf) == [[
        "listener 8883", "cafile %s" % (tmp_path / "tls" / "ca.pem"),
        "certfile %s" % (tmp_path / "tls" / "broker.pem"),
        "keyfile %s" % (tmp_path / "tls" / "broker.key"), "use_username_as_clientid true"]]
    assert "1883" not in conf.read_text()


def _plain_mqtt_refused(port):
    """A plain MQTT CONNECT to the port gets no CONNACK: the connection is closed."""
    connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(connect)
        try:
            data = s.recv(16)
        except ConnectionResetError:
            data = b""
    return not data.startswith(b"\x20")


def test_the_gateway_and_a_wearable_reach_the_broker_over_tls_only(
        gateway_factory, devices, tmp_path, shared_dir):
    tls_dir, conf_d = os.path.join(shared_dir, "tls"), os.path.join(shared_dir, "conf.d")
    port = free_port()
    gw = _gateway(gateway_factory, tmp_path, port, ca_file=os.path.join(tls_dir, "ca.pem"))
    gw.cli("tls-setup", "--out", tls_dir)  # for this machine: localhost and 127.0.0.1
    os.chmod(tls_dir, 0o755)
    gw.cli("broker-config", "--out", conf_d, "--tls", tls_dir, "--listen",
           "127.0.0.1:%d" % port)
    os.chmod(conf_d, 0o755)
    # Where it can, as Debian runs it (reading the broker's key as user mosquitto).
    if debian_mosquitto.skip_reason() is None:
        broker = debian_mosquitto.DebianMosquitto(conf_d, port)
    else:
        broker = Mosquitto(tmp_path / "mosquitto", port=port, include_dir=conf_d)
    broker.start()
    try:
        if isinstance(broker, debian_mosquitto.DebianMosquitto):
            assert broker.user() == "mosquitto"
        assert _plain_mqtt_refused(port)
        gw.start()
        assert any(e["event"] == "mqtt_connected" and e["tls"] for e in gw.log_events())
        a = devices(port, A, key_for(A), password="password-of-a",
                    tls_ca=os.path.join(tls_dir, "wearables-ca.pem"))
        a.publish(a.alarm(p.SOS))
        a.wait_acked([1])
    finally:
        broker.stop()


def test_files_that_would_lock_the_gateway_out_are_refused(gateway_factory, tmp_path):
    tools = gateway_factory(1883)
    tools.cli("tls-setup", "--out", str(tmp_path / "tls"))
    tools.cli("tls-setup", "--out", str(tmp_path / "other"))
    tls = ["--tls", str(tmp_path / "tls"), "--listen", "127.0.0.1:8883"]
    cases = [
        # a TLS-only broker, a gateway without TLS
        (_gateway(gateway_factory, tmp_path, 8883), tls, "vigil: mqtt.tls.enabled: the "
         "broker's listener on port 8883 takes TLS only and the gateway connects without it"),
        # a plain broker, a gateway with TLS
        (_gateway(gateway_factory, tmp_path, 1883, ca_file=str(tmp_path / "tls" / "ca.pem")),
         [], "vigil: mqtt.tls.enabled: the gateway connects with TLS and the broker's "
         "listener on port 1883 is plain MQTT"),
        # a gateway trusting another CA than the one that signed the broker
        (_gateway(gateway_factory, tmp_path, 8883, ca_file=str(tmp_path / "other" / "ca.pem")),
         tls, "vigil: mqtt.tls.ca_file: %s did not sign the broker's certificate"
         % (tmp_path / "other" / "ca.pem")),
        # a certificate that does not name the host the gateway connects to (it checks)
        (_gateway(gateway_factory, tmp_path, 8883, ca_file=str(tmp_path / "tls" / "ca.pem"),
                  host="127.0.0.2"), ["--tls", str(tmp_path / "tls")],
         "vigil: mqtt.host: the gateway connects to 127.0.0.2 and checks that the broker's "
         "certificate names it; %s names " % (tmp_path / "tls" / "broker.pem")),
    ]
    for gw, args, message in cases:
        result = gw.cli("broker-config", "--out", str(gw.dir / "broker"), *args, check=False)
        assert result.returncode == 2, message
        assert result.stderr.startswith(message), result.stderr
        assert "(nothing written)" in result.stderr and "Traceback" not in result.stderr
        assert not (gw.dir / "broker").exists()
    # A gateway port no listener has: written, with a loud warning (it may go another way).
    gw = _gateway(gateway_factory, tmp_path, 1884)
    result = gw.cli("broker-config", "--out", str(gw.dir / "broker"))
    assert "vigil: WARNING: mqtt.port: the gateway connects to 127.0.0.1:1884, and these " \
           "files listen on 1883 only" in result.stderr
    assert (gw.dir / "broker" / "vigil.conf").exists()
    # A listener on the gateway's port, but bound to another address: the same warning's kin.
    gw = _gateway(gateway_factory, tmp_path, 1883)
    result = gw.cli("broker-config", "--out", str(gw.dir / "broker"), "--listen",
                    "127.0.0.2:1883")
    assert "vigil: WARNING: mqtt.host: the gateway connects to 127.0.0.1:1883, and these " \
           "files listen on port 1883 at 127.0.0.2 only" in result.stderr
    for listen in ("127.0.0.1:1883", "0.0.0.0:1883", "localhost:1883"):  # reachable: quiet
        gw = _gateway(gateway_factory, tmp_path, 1883)
        result = gw.cli("broker-config", "--out", str(gw.dir / "broker"), "--listen", listen)
        assert "WARNING" not in result.stderr, (listen, result.stderr)


def _served_serial(port, cafile):
    """The serial number of the certificate the broker presents to a new TLS connection."""
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_broker_certificate_is_served_after_a_reload_without_a_restart(
        gateway_factory, tmp_path, shared_dir):
    # Mosquitto 2.0 rereads a listener's certfile and keyfile on SIGHUP (Debian 12: 2.0.11),
    # so a renewal (`tls-setup` again: same CA, a new certificate in the same files) needs
    # `broker-config --reload` only; the connections already up stay up.
    tls_dir, conf_d = os.path.join(shared_dir, "tls"), os.path.join(shared_dir, "conf.d")
    port = free_port()
    gw = _gateway(gateway_factory, tmp_path, port, ca_file=os.path.join(tls_dir, "ca.pem"))
    gw.cli("tls-setup", "--out", tls_dir)
    os.chmod(tls_dir, 0o755)
    gw.cli("broker-config", "--out", conf_d, "--tls", tls_dir, "--listen",
           "127.0.0.1:%d" % port)
    os.chmod(conf_d, 0o755)
    if debian_mosquitto.skip_reason() is None:
        broker = debian_mosquitto.DebianMosquitto(conf_d, port)
        pid_file = broker.pid_file
    else:
        broker = Mosquitto(tmp_path / "mosquitto", port=port, include_dir=conf_d)
        pid_file = None
    broker.start()
    try:
        ca = os.path.join(tls_dir, "ca.pem")
        first = x509.load_pem_x509_certificate(open(os.path.join(tls_dir, "broker.pem"),
                                                    "rb").read()).serial_number
        assert _served_serial(port, ca) == first
        gw.start()
        gw.cli("tls-setup", "--out", tls_dir)  # the renewal
        renewed = x509.load_pem_x509_certificate(open(os.path.join(tls_dir, "broker.pem"),
                                                      "rb").read()).serial_number
        assert renewed != first
        assert _served_serial(port, ca) == first  # nothing changes before the reload
        if pid_file is None:
            pid_file = str(tmp_path / "broker.pid")
            with open(pid_file, "w") as f:
                f.write("%d\n" % broker.proc.pid)
        gw.cli("broker-config", "--out", conf_d, "--tls", tls_dir, "--listen",
               "127.0.0.1:%d" % port, "--reload", "--pid-file", pid_file)
        wait_for(lambda: _served_serial(port, ca) == renewed, 10, "the renewed certificate")
        assert broker.proc.poll() is None  # the same broker, not restarted
        connected = [e for e in gw.log_events() if e["event"] == "mqtt_connected"]
        assert len(connected) == 1 and gw.get("/healthz")[0] == 200  # the gateway stayed on
    finally:
        broker.stop()
