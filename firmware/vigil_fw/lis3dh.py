# LIS3DH accelerometer over I2C (machine.I2C interface: readfrom_mem / readfrom_mem_into /
# writeto_mem). Register values per the ST datasheet. The part runs at 100 Hz all the time:
#   INT2: its tap engine, set up for double taps (latched until CLICK_SRC is read)
#   FIFO: stream mode, so it always holds the last 32 samples (320 ms)
#   INT1: what wakes the man-down sampler, one of (wake_on):
#     ON_BATCH     the FIFO watermark: WATERMARK samples to read (a batch per wake-up)
#     ON_MOVEMENT  movement: an axis, high-passed (about 1 Hz), past ACTIVITY_MG; while the
#                  wearer is still nothing is read, and the FIFO still holds what led up to it
#     ON_NOTHING   no interrupt (man-down off, no prompt open)
# Reads into buffers allocated here (read_mg): nothing is allocated per sample or per batch.
from vigil_protocol._compat import const

_WHO_AM_I = const(0x0F)
_CTRL_REG1 = const(0x20)
_CTRL_REG2 = const(0x21)
_CTRL_REG3 = const(0x22)
_CTRL_REG4 = const(0x23)
_CTRL_REG5 = const(0x24)
_CTRL_REG6 = const(0x25)
_OUT_X_L = const(0x28)
_FIFO_CTRL = const(0x2E)
_FIFO_SRC = const(0x2F)
_INT1_CFG = const(0x30)
_INT1_SRC = const(0x31)
_INT1_THS = const(0x32)
_INT1_DURATION = const(0x33)
_CLICK_CFG = const(0x38)
_CLICK_SRC = const(0x39)
_CLICK_THS = const(0x3A)
_TIME_LIMIT = const(0x3B)
_TIME_LATENCY = const(0x3C)
_TIME_WINDOW = const(0x3D)

ON_NOTHING = const(0)
ON_MOVEMENT = const(1)
ON_BATCH = const(2)
FIFO_SAMPLES = const(32)

_ID = const(0x33)
_AUTO_INCREMENT = const(0x80)
_ODR_100HZ_XYZ = const(0x57)  # 100 Hz, normal mode, X Y Z enabled
_BDU_4G_HR = const(0x98)      # block data update, +-4 g, high resolution
_HP_CLICK_IA1 = const(0x15)   # high-pass (1 Hz at 100 Hz) on the click path and on IA1
_I1_IA1 = const(0x40)         # INT1: interrupt generator 1 (movement)
_I1_WTM = const(0x04)         # INT1: FIFO watermark
_I2_CLICK = const(0x80)       # INT2: the tap engine
_FIFO_EN = const(0x40)
_STREAM = const(0x80)         # FIFO_CTRL: stream mode (the oldest sample gives way)
_XYZ_HIGH = const(0x2A)       # INT1_CFG: X, Y or Z high (OR)
_INT1_IA = const(0x40)
_FIFO_OVRN = const(0x40)      # FIFO_SRC: full (32 samples unread)
_FIFO_FSS = const(0x1F)
_MG_PER_INT_LSB = const(32)   # INT1_THS at +-4 g
_DOUBLE_XYZ = const(0x2A)     # double click on X, Y and Z
_CLICK_SRC_DCLICK = const(0x20)
_CLICK_SRC_IA = const(0x40)
_CLICK_LATCH = const(0x80)    # CLICK_THS bit 7: interrupt latched until CLICK_SRC is read
_MG_PER_THS_LSB = const(31)   # +-4 g full scale: 4000 mg / 128, rounded down
_MG_PER_DIGIT = const(2)      # +-4 g, high-resolution (12-bit) output


class AccelError(Exception):
    pass


class LIS3DH:
    ODR_HZ = 100
    WATERMARK = 25     # samples a batch: 4 wake-ups a second while the sampler reads
    ACTIVITY_MG = 128  # movement that wakes the sampler (any axis, high-passed)
    TAP_THRESHOLD_MG = 1200
    TAP_TIME_LIMIT_MS = 40   # a tap is shorter than this
    TAP_LATENCY_MS = 80      # quiet after the first tap before the second may start
    TAP_WINDOW_MS = 400      # the second tap must come within this

    def __init__(self, i2c, address=0x18):
        self.i2c = i2c
        self.address = address
        # A batch is read in at most 5 bursts of 16, 8, 4, 2 and 1 samples (the part's address
        # rolls back from OUT_Z_H to OUT_X_L while its FIFO is on), each into a view made
        # here: a slice made per read would allocate.
        self._raw = bytearray(6 * 16)
        view = memoryview(self._raw)
        self._views = (view[:96], view[:48], view[:24], view[:12], view[:6])
        self._reg = bytearray(1)

    def _write(self, reg, value):
        self.i2c.writeto_mem(self.address, reg, bytes([value]))

    def _read(self, reg, n=1):
        return self.i2c.readfrom_mem(self.address, reg, n)

    def _read_reg(self, reg):
        self.i2c.readfrom_mem_into(self.address, reg, self._reg)
        return self._reg[0]

    def start(self):
        """Check the part, run it at 100 Hz, its FIFO streaming, and arm the double-tap
        interrupt on INT2. INT1 stays quiet until wake_on() says what it is for."""
        who = self._read(_WHO_AM_I)[0]
        if who != _ID:
            raise AccelError("no LIS3DH at 0x%02x (WHO_AM_I 0x%02x)" % (self.address, who))
        ms = 1000 // self.ODR_HZ
        self._write(_CTRL_REG1, _ODR_100HZ_XYZ)
        self._write(_CTRL_REG2, _HP_CLICK_IA1)
        self._write(_CTRL_REG4, _BDU_4G_HR)
        self._write(_CTRL_REG5, _FIFO_EN)
        self._write(_FIFO_CTRL, _STREAM | (self.WATERMARK - 1))  # WTM above WATERMARK - 1
        self._write(_INT1_CFG, _XYZ_HIGH)
        self._write(_INT1_THS, min(127, self.ACTIVITY_MG // _MG_PER_INT_LSB))
        self._write(_INT1_DURATION, 0)
        self._write(_CTRL_REG3, 0)
        self._write(_CLICK_CFG, _DOUBLE_XYZ)
        self._write(_CLICK_THS, _CLICK_LATCH | min(127, self.TAP_THRESHOLD_MG // _MG_PER_THS_LSB))
        self._write(_TIME_LIMIT, min(127, self.TAP_TIME_LIMIT_MS // ms))
        self._write(_TIME_LATENCY, min(255, self.TAP_LATENCY_MS // ms))
        self._write(_TIME_WINDOW, min(255, self.TAP_WINDOW_MS // ms))
        self._write(_CTRL_REG6, _I2_CLICK)

    def wake_on(self, what):
        """What INT1 signals from now on: ON_BATCH, ON_MOVEMENT or ON_NOTHING."""
        self._write(_CTRL_REG3, _I1_WTM if what == ON_BATCH else
                    _I1_IA1 if what == ON_MOVEMENT else 0)

    def moving(self):
        """Read (and clear) the movement interrupt's source: True if an axis is past
        ACTIVITY_MG (the sampler asks this as it goes to sleep, not to miss an edge)."""
        return bool(self._read_reg(_INT1_SRC) & _INT1_IA)

    def double_tapped(self):
        """Read (and so clear) the click source: True if it latched a double tap."""
        src = self._read(_CLICK_SRC)[0]
        return bool(src & _CLICK_SRC_IA and src & _CLICK_SRC_DCLICK)

    def read_mg(self, out):
        """Every sample waiting in the FIFO, oldest first, into `out` (an array("h") of
        3 * FIFO_SAMPLES: x, y, z in mg); returns how many. Allocates nothing."""
        src = self._read_reg(_FIFO_SRC)
        n = FIFO_SAMPLES if src & _FIFO_OVRN else src & _FIFO_FSS
        at = 0
        size = 16
        for view in self._views:
            while n - at // 3 >= size:
                self.i2c.readfrom_mem_into(self.address, _OUT_X_L | _AUTO_INCREMENT, view)
                raw = self._raw
                i = 0
                while i < size * 6:  # (a range() would be an object per burst)
                    value = raw[i] | (raw[i + 1] << 8)
                    if value & 0x8000:
                        value -= 0x10000
                    out[at] = (value >> 4) * _MG_PER_DIGIT
                    at += 1
                    i += 2
            size >>= 1
        return n
