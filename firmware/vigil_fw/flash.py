# Files on flash, written so that power loss at any instant leaves either the old or the new
# content, never a torn mix.
#
# Rules:
#   every record is sealed: payload | crc32(payload) (4 bytes, big-endian)
#   write_atomic(path): write path.tmp in full, then rename it over path
#   read_sealed(path): the newest intact copy among path and path.tmp, else None
#     (a rename may be done as unlink + rename on FAT; then only path.tmp holds the data)
#   callers that need "newest" pass a key function (e.g. a counter limit only grows)
import binascii
import os
import struct

TMP = ".tmp"


def seal(payload):
    return payload + struct.pack(">I", binascii.crc32(payload) & 0xFFFFFFFF)


def crc_ok(buf, n):
    """Whether the first `n` bytes of `buf` are an intact sealed record (read in place)."""
    return n >= 4 and struct.unpack_from(">I", buf, n - 4)[0] == \
        binascii.crc32(memoryview(buf)[:n - 4]) & 0xFFFFFFFF


def unseal(data):
    """The payload of an intact sealed record, or None for a torn or foreign one."""
    if data is None or len(data) < 4:
        return None
    payload = data[:-4]
    if struct.unpack(">I", data[-4:])[0] != binascii.crc32(payload) & 0xFFFFFFFF:
        return None
    return payload


class Flash:
    """The wearable's filesystem under `root`. Tests wrap it to cut the power mid-write."""

    def __init__(self, root):
        self.root = root.rstrip("/")
        self.mkdir("")

    def path(self, name):
        return self.root + "/" + name if name else self.root

    def mkdir(self, name):
        try:
            os.mkdir(self.path(name))
        except OSError:
            pass  # exists

    def read(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def read_into(self, name, buf):
        """Read `name` into `buf` (a sized read: no new block of heap); the byte count, or -1
        when there is no such file."""
        try:
            with open(self.path(name), "rb") as f:
                return f.readinto(buf)
        except OSError:
            return -1

    def exists(self, name):
        try:
            os.stat(self.path(name))
            return True
        except OSError:
            return False

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)

    def rename(self, old, new):
        try:
            os.rename(self.path(old), self.path(new))
        except OSError:
            # Some filesystems refuse to rename over an existing file: unlink, then rename.
            # read_sealed() copes with a power cut between the two.
            self.remove(new)
            os.rename(self.path(old), self.path(new))

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError:
            pass

    def listdir(self, name):
        try:
            return sorted(os.listdir(self.path(name)))
        except OSError:
            return []


def write_atomic(flash, name, payload):
    flash.write(name + TMP, seal(payload))
    flash.rename(name + TMP, name)


def read_sealed(flash, name, newest=None):
    """The intact payload of `name`, or of its .tmp twin when that is newer (by `newest`)."""
    main = unseal(flash.read(name))
    tmp = unseal(flash.read(name + TMP))
    if main is None:
        return tmp
    if tmp is None or newest is None:
        return main
    return tmp if newest(tmp) > newest(main) else main
