"""ROMFS: the firmware as a read-only image that MicroPython executes in place.

On a board with a ROMFS partition (MicroPython >= 1.25), the partition is memory-mapped
flash: MicroPython mounts it at /rom and runs the .mpy files in it without copying their
bytecode into the heap. That is what lets the wearable fit its 64 KiB heap budget.

The unix port has no flash, so a host file stands in for the partition: this module maps it
into the process (outside MicroPython's GC heap, where flash would be) and starts the unix
port in the same process. The port is a CPython extension, so the address is simply passed
on in the environment (VIGIL_ROMFS), and device-side code mounts it with MOUNT_FILE.

    python -m vigil_tools.romfs PARTITION_FILE [--writable] MICROPYTHON_ARG...

--writable maps the file shared, so writes through the mapping (a deploy) reach the file.
"""
import ctypes
import mmap
import os
import pathlib
import sys

ENV = "VIGIL_ROMFS"
HEADER = b"\xd2\xcd\x31"  # what every ROMFS image starts with

# MicroPython source that mounts the mapped partition at /rom (see romfs_mount.py).
MOUNT_FILE = pathlib.Path(__file__).with_name("romfs_mount.py")


def build_image(folder):
    """A ROMFS image (bytes) of everything in `folder`, .mpy files as they are."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree it packs
        return make_romfs(str(folder), mpy_cross=False)


def command(partition, writable=False):
    """The command line that runs the unix port with `partition` mapped (append its args)."""
    return [sys.executable, "-m", "vigil_tools.romfs", str(partition)] + (
        ["--writable"] if writable else [])


def _map(path, writable):
    with open(path, "r+b" if writable else "rb") as f:
        # A private copy-on-write mapping when read-only: ctypes needs a writable buffer to
        # take its address, and the image is never written through it.
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable
                         else mmap.ACCESS_COPY)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    path, args = argv[0], argv[1:]
    writable = bool(args) and args[0] == "--writable"
    if writable:
        args = args[1:]
    try:
        mapping = _map(path, writable)
    except (OSError, ValueError) as exc:
        raise SystemExit("vigil romfs: cannot map %s: %s" % (path, exc))
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    os.environ[ENV] = "%d:%d" % (address, len(mapping))
    try:
        import micropython_run
    except ImportError:
        raise SystemExit("vigil romfs: the MicroPython unix port is not installed (run "
                         "`make setup`)")
    # The mapping must outlive MicroPython: it runs in this process until it exits.
    return micropython_run.run_main(["micropython"] + args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
