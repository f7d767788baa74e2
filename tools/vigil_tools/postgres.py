"""A throwaway PostgreSQL server on loopback, for the tests and the benchmarks.

    server = PostgresServer(workdir).start()     # initdb, then pg_ctl start on a free port
    server.create_database("t1", template="tmpl")
    server.url("t1")                             # postgresql://vigil@127.0.0.1:PORT/t1
    server.stop()
    standby = server.standby()                   # pg_basebackup: a streaming standby, started
    server.crash(); standby.promote()            # a failover: the primary SIGKILLed

Debian's server binaries live in /usr/lib/postgresql/<major>/bin, off PATH. The server refuses
to run as root: as root the cluster's folder is given to the `postgres` user and every server
command runs as that user (runuser). Authentication is `trust` on loopback only: the cluster is
private to one test session or benchmark and holds no password.
"""
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "vigil"


def bindir():
    """The newest installed server's binaries, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    exe = shutil.which("initdb")
    return os.path.dirname(exe) if exe else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid):
    """The process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    # "pid (comm) state ppid ...": comm may hold spaces, so split after it
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


class PostgresServer:
    def __init__(self, workdir=None, port=None, fsync=False):
        # Not under pytest's tmp folder: that is 0700 root's, which `postgres` cannot enter.
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="vigil-pg-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.bin = bindir()
        self._as_root = os.geteuid() == 0
        self.fsync = fsync  # False for tests (a throwaway cluster); True for figures

    def _run(self, *argv):
        cmd = [os.path.join(self.bin, argv[0])] + list(argv[1:])
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError("%s failed: %s%s" % (argv[0], result.stderr.strip(),
                                                    self._log_tail()))
        return result

    def _log_tail(self):
        try:
            return "\n" + "\n".join(self.log.read_text().splitlines()[-10:])
        except OSError:
            return ""

    def start(self):
        if self.bin is None:
            raise RuntimeError("PostgreSQL's server is not installed (run `make setup`)")
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            os.chmod(self.dir, 0o700)
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-N",
                      "-E", "UTF8", "--locale=C")
        # -F: no fsync (a throwaway cluster; durability is SQLite's and PostgreSQL's own job),
        # unless asked (the benchmark: a commit on disk, as the gateway's SQLite commits are).
        # The socket lives in the cluster's folder, not in /var/run/postgresql.
        options = ("%s-p %d -k %s -c listen_addresses=%s -c max_connections=100"
                   % ("" if self.fsync else "-F ", self.port, self.dir, self.host))
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", options, "start")
        return self

    def _postmaster(self):
        """The server's process id, or None when it is not running."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def stop(self, mode="fast"):
        if self._postmaster() is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def crash(self):
        """Gone at once, as with a lost machine: every process of the server SIGKILLed (no
        shutdown, nothing more sent to a standby or a client)."""
        pid = self._postmaster()
        if pid is None:
            return
        for each in [pid] + _children(pid):
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self._postmaster() is not None:  # (reaped by init)
            time.sleep(0.01)

    def processes(self, kind):
        """The process ids of the server's `kind` processes ("walsender", ...)."""
        with self.connect(autocommit=True) as conn:
            return [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = %s", (kind,))]

    def standby(self, workdir=None):
        """A streaming standby of this server, started on a port of its own: a base backup
        (pg_basebackup -R, which also writes its primary_conninfo), then the server on it."""
        other = PostgresServer(workdir, fsync=self.fsync)
        if other._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(other.dir, owner.pw_uid, owner.pw_gid)
            os.chmod(other.dir, 0o700)
        self._run("pg_basebackup", "-D", str(other.data), "-R", "-X", "stream", "-c", "fast",
                  "-h", self.host, "-p", str(self.port), "-U", SUPERUSER)
        return other.start()

    def promote(self):
        """A standby made the primary (pg_ctl promote, waiting until it takes writes)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "promote")

    def restart(self):
        self.stop()
        return self.start()

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database="postgres"):
        return "postgresql://%s@%s:%d/%s" % (SUPERUSER, self.host, self.port, database)

    def connect(self, database="postgres", **kwargs):
        import psycopg

        return psycopg.connect(self.url(database), **kwargs)

    def create_database(self, name, template=None):
        sql = 'CREATE DATABASE "%s"' % name
        with self.connect(autocommit=True) as conn:
            if template:
                sql += ' TEMPLATE "%s"' % template
                # PostgreSQL 15 on copies a template through the WAL (about 110 ms here); a
                # file copy, as before 15, takes about 11 ms: a fresh database per test
                if conn.info.server_version >= 150000:
                    sql += " STRATEGY FILE_COPY"
            conn.execute(sql)
        return self.url(name)

    def drop_database(self, name):
        with self.connect(autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
