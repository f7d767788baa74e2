"""A throwaway PostgreSQL server on loopback, for the tests and the benchmarks.

    server = PostgresServer(workdir).start()     # initdb, then pg_ctl start on a free port
    server.create_database("t1", template="tmpl")
    server.url("t1")                             # postgresql://vigil@127.0.0.1:PORT/t1
    server.stop()

Debian's server binaries live in /usr/lib/postgresql/<major>/bin, off PATH. The server refuses
to run as root: as root the cluster's folder is given to the `postgres` user and every server
command runs as that user (runuser). Authentication is `trust` on loopback only: the cluster is
private to one test session or benchmark and holds no password.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
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

    def stop(self):
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

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
