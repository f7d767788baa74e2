# Mosquitto started as Debian's package starts it: `mosquitto -c mosquitto.conf` as root, on
# Debian's own main file (no `user` line: the broker drops to its default user, mosquitto,
# before it reads the password and ACL files), with only its paths moved to folders of the
# test's own. (A module of its own, not conftest.py: test folders' conftest modules shadow
# each other.)
import os
import shutil
import socket
import subprocess
import tempfile
import time

DEBIAN_CONF = "/etc/mosquitto/mosquitto.conf"
# Debian 12's /etc/mosquitto/mosquitto.conf, for a machine where the package left none.
DEBIAN_TEXT = """pid_file /run/mosquitto/mosquitto.pid
persistence true
persistence_location /var/lib/mosquitto/
log_dest file /var/log/mosquitto/mosquitto.log
include_dir /etc/mosquitto/conf.d
"""


def skip_reason():
    """Why such a broker cannot run here, or None."""
    import pwd

    if os.geteuid() != 0:
        return "needs root: Debian's broker starts as root and drops to user mosquitto"
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return "needs Debian's mosquitto user (apt-get install mosquitto)"
    return None


class DebianMosquitto:
    """conf_d stands in for /etc/mosquitto/conf.d (it must be readable by user mosquitto);
    /var/lib/mosquitto, /run/mosquitto and /var/log/mosquitto are folders of our own that user
    mosquitto owns, as the package's service makes them."""

    def __init__(self, conf_d, port):
        self.conf_d = conf_d
        self.port = port
        self.home = tempfile.mkdtemp(prefix="vigil-debian-mosquitto-")
        os.chmod(self.home, 0o755)
        self.state, self.run, self.logs = (os.path.join(self.home, d) for d in ("lib", "run",
                                                                               "log"))
        for folder in (self.state, self.run, self.logs):
            os.mkdir(folder, 0o750)
            shutil.chown(folder, "mosquitto")
        self.pid_file = os.path.join(self.run, "mosquitto.pid")
        self.log = os.path.join(self.logs, "mosquitto.log")
        self.conf = os.path.join(self.home, "mosquitto.conf")
        self.proc = None

    def _main_file(self):
        try:
            with open(DEBIAN_CONF) as f:
                text = f.read()
        except OSError:
            text = DEBIAN_TEXT
        moved = {"pid_file": self.pid_file, "persistence_location": self.state + "/",
                 "log_dest": "file " + self.log, "include_dir": self.conf_d}
        lines = []
        for line in text.splitlines():
            key = line.split(" ", 1)[0]
            lines.append("%s %s" % (key, moved[key]) if key in moved else line)
        return "\n".join(lines) + "\nlog_type all\n"

    def start(self, timeout=10):
        with open(self.conf, "w") as f:
            f.write(self._main_file())
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited: %s %s" % (
                    self.proc.stderr.read().decode(errors="replace"), self.log_text()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if os.path.exists(self.pid_file):
                    return self
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError("mosquitto did not listen on %d: %s" % (self.port,
                                                                     self.log_text()))

    def user(self):
        """The user the broker runs as, from /proc."""
        import pwd

        with open("/proc/%d/status" % self.proc.pid) as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        return pwd.getpwuid(uid).pw_name

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)
