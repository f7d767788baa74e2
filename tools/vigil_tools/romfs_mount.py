# Device-side (MicroPython only): mount the ROMFS partition mapped by `vigil_tools.romfs` at
# /rom, as a ROMFS-enabled board does at every reset, with /rom and /rom/lib ahead of /lib on
# sys.path (ahead of everything but the current folder when there is no /lib). Nothing
# happens without a mapping, or when the partition holds no image (erased, or a deploy was
# cut short). Run as source text: prepended to scripts, or exec'd by the virtual board.


def _vigil_mount_rom():
    import os
    import sys
    import uctypes
    import vfs
    where = os.getenv("VIGIL_ROMFS")
    if not where:
        return
    address, size = where.split(":")
    rom = uctypes.bytearray_at(int(address), int(size))
    if rom[:3] != b"\xd2\xcd\x31":
        return
    try:
        vfs.mount(vfs.VfsRom(rom), "/rom")
    except OSError:
        return  # a damaged image: the board starts without it
    at = sys.path.index("/lib") if "/lib" in sys.path else 1
    sys.path[at:at] = ["/rom", "/rom/lib"]


_vigil_mount_rom()
del _vigil_mount_rom
