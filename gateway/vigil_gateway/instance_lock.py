# One gateway per data_dir: two on the same database would both answer the same wearables
# with their own downlink counters and race on the outbox. `vigil gateway run` holds an
# exclusive lock on <data_dir>/gateway.lock for as long as it runs; a second one is refused
# with one line naming the first's pid.
#
# flock(2) and not a pid file alone: the kernel drops the lock when the process dies, however
# it dies (SIGKILL, power cut), so a stale file never keeps a restarted gateway out. The CLI's
# other commands (device add, incidents, ...) take no lock: they run beside the gateway.
import fcntl
import os

from .errors import ConfigError

LOCK_NAME = "gateway.lock"


def acquire(data_dir):
    """Lock data_dir for this process; returns the open lock file (keep it: closing it, or
    exiting, releases the lock). Raises ConfigError when another gateway holds it."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError("gateway.data_dir", "another gateway (pid %s) is running on %s: one "
                          "gateway per data folder" % (holder, data_dir)) from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError("gateway.data_dir", "cannot lock %s: %s" % (path, exc.strerror)) \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return os.fdopen(fd, "r+")
