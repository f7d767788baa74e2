"""A local Mosquitto broker on loopback, for the demo, the benchmarks and the tests.

    broker = Mosquitto(tmp_dir)                  # anonymous, persistence on
    broker = Mosquitto(tmp_dir, passwords={"dev": "pw"}, acl="pattern write up/%u\\n")
    broker = Mosquitto(tmp_dir, port=p, include_dir=d)  # on d's *.conf files (listener on p)
    broker.start(); broker.restart(); broker.stop()

Runs as root on CI: `user root` keeps it able to read its password and ACL files in a private
temporary folder (it would otherwise drop to user mosquitto).
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, workdir, port=None, passwords=None, acl=None, tls=None,
                 tls_port=None, allow_anonymous=None, extra="", include_dir=None, user=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls  # {"cafile":, "certfile":, "keyfile":} for a second, TLS listener
        self.tls_port = tls_port or (free_port() if tls else None)
        self.passwords = passwords
        self.acl = acl
        self.allow_anonymous = (passwords is None) if allow_anonymous is None else allow_anonymous
        self.extra = extra
        # A folder of configuration files (e.g. what `vigil gateway broker-config` writes): the
        # broker runs on those, the main file holding only what is this broker's own (user root
        # when run as root, the persistence folder, the log); the listener on `port` is theirs.
        self.include_dir = include_dir
        # With include_dir, run as this user (as root: `user root` unless told, so it can read
        # files in a private folder; "mosquitto" runs it as Debian's package does).
        self.user = user or ("root" if os.geteuid() == 0 else None)
        self.proc = None
        self.log = self.dir / "mosquitto.log"

    def _config(self):
        if self.include_dir is not None:
            return self._write_config(self._site_lines() + ["include_dir %s" % self.include_dir])
        lines = ["user root" if os.geteuid() == 0 else "",
                 "persistence true",
                 "persistence_location %s/" % self.dir,
                 "autosave_interval 1",
                 "log_dest file %s" % self.log,
                 "log_type all",
                 "per_listener_settings false",
                 "allow_anonymous %s" % ("true" if self.allow_anonymous else "false"),
                 "max_queued_messages 100000",
                 "listener %d 127.0.0.1" % self.port]
        if self.tls:
            lines += ["listener %d 127.0.0.1" % self.tls_port,
                      "cafile %s" % self.tls["cafile"],
                      "certfile %s" % self.tls["certfile"],
                      "keyfile %s" % self.tls["keyfile"]]
            if self.tls.get("require_certificate"):
                lines.append("require_certificate true")
        if self.passwords is not None:
            pwfile = self.dir / "passwords"
            pwfile.write_text("")
            for user, password in self.passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password],
                               check=True, capture_output=True)
            lines.append("password_file %s" % pwfile)
        if self.acl is not None:
            aclfile = self.dir / "acl"
            aclfile.write_text(self.acl)
            lines.append("acl_file %s" % aclfile)
        lines.append(self.extra)
        return self._write_config(lines)

    def _site_lines(self):
        # The listeners are the included files' (give `port` to match): Mosquitto applies
        # listener settings there, such as use_username_as_clientid, to a listener of the same
        # file only.
        return ["user %s" % self.user if self.user else "",
                "persistence_location %s/" % self.dir,
                "log_dest file %s" % self.log,
                "log_type all",
                self.extra]

    def _write_config(self, lines):
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(line for line in lines if line) + "\n")
        return conf

    def start(self, timeout=10):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise RuntimeError("mosquitto is not installed (run `make setup`)")
        self.proc = subprocess.Popen([exe, "-c", str(self._config())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: %s %s" % (
                    self.proc.stderr.read().decode(errors="replace"),
                    self.log.read_text() if self.log.exists() else ""))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("mosquitto did not listen on %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()
