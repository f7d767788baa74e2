# The virtual board's start-up: the MicroPython unix port runs this file (`micropython -i`) at
# every emulated reset. It runs on MicroPython only, never on CPython.
#
# It gives the firmware what a wearable gives it:
#   "/" is the board's flash (a host folder) and sys.path is ['', '.frozen', '/lib'];
#   a ROMFS partition when the launcher mapped one: vfs.rom_ioctl() as a ROMFS-enabled port
#     has it, and its image (if any) mounted at /rom with /rom and /rom/lib before /lib;
#   machine and network are inert stand-ins: buttons never pressed, nothing answering on I2C
#     (the firmware falls back to sampling), a full battery, a watchdog that never bites, a
#     UART (a GNSS module's) that never receives a byte, and Wi-Fi "connected" through the
#     host's own network;
#   boot.py runs at every reset, main.py only when the reset leaves the friendly REPL (as on a
#     real board: a reset from the raw REPL skips main.py), then the REPL takes over.
import os
import sys
import vfs


def _module(name, *members):
    # MicroPython cannot make module objects; a class works as a namespace for `import`.
    attrs = {}
    real = sys.modules.get(name)
    if real is None:
        try:
            real = __import__(name)
        except ImportError:
            pass
    for attr in dir(real) if real is not None else ():
        if not attr.startswith("__"):
            attrs[attr] = getattr(real, attr)
    for member in members:
        attrs[member.__name__] = member
    module = type(name, (), attrs)
    sys.modules[name] = module
    return module


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, pin_id, mode=IN, pull=None, value=None):
        self.id = pin_id
        self.level = 1 if value is None else value  # inputs idle high (pulled up)
        self.handler = None

    def value(self, level=None):
        if level is None:
            return self.level
        self.level = level

    def irq(self, handler=None, trigger=0, hard=False):
        self.handler = handler


class I2C:
    def __init__(self, bus_id, sda=None, scl=None, freq=400000):
        self.bus_id = bus_id

    def readfrom_mem(self, addr, reg, nbytes):
        raise OSError(19)  # ENODEV: no part answers

    def writeto_mem(self, addr, reg, buf):
        raise OSError(19)


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.pin = pin

    def atten(self, level):
        pass

    def read_uv(self):
        return 2050000  # 4.1 V behind the 1:2 divider


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass


def UART(uart_id, baudrate=9600, rx=None, tx=None, timeout=0, rxbuf=256):
    """A UART with nothing on its line: a UDP socket bound to a free loopback port, which
    asyncio can wait on as it waits on a board's UART (a file descriptor: the scheduler sleeps
    in poll(), never loops), and nobody sends to."""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
    s.setblocking(False)
    return s


def reset():
    # The process ends and the bridge restarts it: that is the reset. sys.exit() alone would
    # not end it from main.py (after its script `micropython -i` goes on to the REPL), so the
    # process is ended from outside, as a reset ends whatever ran (the shell's parent is it).
    os.system("kill -9 $PPID")
    sys.exit(0)


def soft_reset():
    reset()


class WLAN:
    def __init__(self, interface=0):
        self.up = False

    def active(self, up=None):
        if up is None:
            return self.up
        self.up = up

    def connect(self, ssid=None, key=None):
        self.up = True

    def isconnected(self):
        return self.up

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")


# vfs.rom_ioctl operations (MicroPython's ROMFS interface, as mpremote uses it)
_ROM_COUNT, _ROM_BUFFER, _ROM_ERASE, _ROM_WRITE, _ROM_DONE, _ROM_BLOCK = 1, 2, 3, 4, 5, 6
_ROM_BLOCK_SIZE = 4096
_ENODEV, _EINVAL = 19, 22


def _rom_partition():
    where = os.getenv("VIGIL_ROMFS")
    if not where:
        return None
    import uctypes
    address, size = where.split(":")
    return uctypes.bytearray_at(int(address), int(size))


_ROM = _rom_partition()


def rom_ioctl(op, *args):
    """The board's one ROMFS partition: writes go through the mapping to the partition file."""
    if op == _ROM_COUNT:
        return 1 if _ROM is not None else 0
    if _ROM is None or not args or args[0] != 0:
        return -_ENODEV
    if op == _ROM_BUFFER:
        return memoryview(_ROM)
    if op == _ROM_BLOCK:
        return _ROM_BLOCK_SIZE
    if op == _ROM_ERASE:
        offset, length = (0, args[1]) if len(args) == 2 else (args[1], args[2])
        if offset < 0 or offset + length > len(_ROM):
            return -_EINVAL
        for at in range(offset, offset + length, _ROM_BLOCK_SIZE):
            end = min(at + _ROM_BLOCK_SIZE, len(_ROM))
            _ROM[at:end] = b"\xff" * (end - at)
        return 4  # smallest write the partition takes
    if op == _ROM_WRITE:
        offset, data = args[1], args[2]
        if offset < 0 or offset + len(data) > len(_ROM):
            return -_EINVAL
        _ROM[offset:offset + len(data)] = data
        return 0
    if op == _ROM_DONE:
        return 0
    return -_EINVAL


class FlashVfs:
    """The board's flash: VfsPosix on a host folder, except rename. This unix port's VfsPosix
    loses the first path when both are absolute (they share one buffer), and the firmware's
    atomic writes rename absolute paths; a root-less VfsPosix given host paths does it right."""

    def __init__(self, root):
        self.root = root.rstrip("/")
        self.flash = vfs.VfsPosix(root)
        self.host = vfs.VfsPosix()

    def __getattr__(self, name):
        return getattr(self.flash, name)

    def _host_path(self, path):
        if not path.startswith("/"):
            cwd = self.flash.getcwd().rstrip("/")
            path = cwd + "/" + path
        return self.root + path

    def rename(self, old, new):
        self.host.rename(self._host_path(old), self._host_path(new))


def _run_if_present(name):
    try:
        with open(name) as f:
            source = f.read()
    except OSError:
        return
    try:
        exec(compile(source, name, "exec"), {"__name__": "__main__", "__file__": name})
    except BaseException as exc:  # noqa: B902 - a board prints the traceback, then the REPL
        if isinstance(exc, SystemExit):
            raise
        sys.print_exception(exc)


def _start():
    _module("machine", Pin, I2C, ADC, UART, WDT, reset, soft_reset)
    network = _module("network", WLAN)
    network.STA_IF = 0
    network.AP_IF = 1
    if _ROM is not None:
        _module("vfs", rom_ioctl)  # a port built without ROMFS has no vfs.rom_ioctl
    flash = os.getenv("VIGIL_BOARD_FLASH")
    vfs.umount("/")
    vfs.mount(FlashVfs(flash), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    host = vfs.VfsPosix()
    with host.open(os.getenv("VIGIL_ROMFS_MOUNT"), "r") as f:
        exec(f.read(), {})  # mounts the partition's image at /rom, as a board does
    # Tell the bridge that a Ctrl-C may come now: it can only stop boot.py or main.py.
    vfs.VfsPosix().open(os.getenv("VIGIL_BOARD_READY"), "w").close()
    _run_if_present("boot.py")
    if os.getenv("VIGIL_BOARD_MODE") != "raw":
        _run_if_present("main.py")


try:
    _start()
except KeyboardInterrupt:
    pass  # a second Ctrl-C while the first was being reported: the REPL comes next anyway
del _module, _run_if_present, _start, FlashVfs, Pin, I2C, ADC, UART, WDT, WLAN, reset
del soft_reset
del rom_ioctl, _rom_partition
