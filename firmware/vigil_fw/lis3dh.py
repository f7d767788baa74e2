# LIS3DH accelerometer over I2C (machine.I2C interface: readfrom_mem / writeto_mem), with its
# hardware tap engine set up for double taps on INT1. Register values per the ST datasheet.
from vigil_protocol._compat import const

_WHO_AM_I = const(0x0F)
_CTRL_REG1 = const(0x20)
_CTRL_REG2 = const(0x21)
_CTRL_REG3 = const(0x22)
_CTRL_REG4 = const(0x23)
_CTRL_REG5 = const(0x24)
_OUT_X_L = const(0x28)
_CLICK_CFG = const(0x38)
_CLICK_SRC = const(0x39)
_CLICK_THS = const(0x3A)
_TIME_LIMIT = const(0x3B)
_TIME_LATENCY = const(0x3C)
_TIME_WINDOW = const(0x3D)

_ID = const(0x33)
_AUTO_INCREMENT = const(0x80)
_ODR_100HZ_XYZ = const(0x57)  # 100 Hz, normal mode, X Y Z enabled
_BDU_4G_HR = const(0x98)      # block data update, +-4 g, high resolution
_HP_CLICK = const(0x04)       # high-pass filter on the click path
_I1_CLICK = const(0x80)       # click interrupt on INT1
_LIR_INT1 = const(0x08)
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
    TAP_THRESHOLD_MG = 1200
    TAP_TIME_LIMIT_MS = 40   # a tap is shorter than this
    TAP_LATENCY_MS = 80      # quiet after the first tap before the second may start
    TAP_WINDOW_MS = 400      # the second tap must come within this

    def __init__(self, i2c, address=0x18):
        self.i2c = i2c
        self.address = address

    def _write(self, reg, value):
        self.i2c.writeto_mem(self.address, reg, bytes([value]))

    def _read(self, reg, n=1):
        return self.i2c.readfrom_mem(self.address, reg, n)

    def start(self):
        """Check the part, run it at 100 Hz and arm the double-tap interrupt on INT1."""
        who = self._read(_WHO_AM_I)[0]
        if who != _ID:
            raise AccelError("no LIS3DH at 0x%02x (WHO_AM_I 0x%02x)" % (self.address, who))
        ms = 1000 // self.ODR_HZ
        self._write(_CTRL_REG1, _ODR_100HZ_XYZ)
        self._write(_CTRL_REG2, _HP_CLICK)
        self._write(_CTRL_REG4, _BDU_4G_HR)
        self._write(_CTRL_REG5, _LIR_INT1)
        self._write(_CLICK_CFG, _DOUBLE_XYZ)
        self._write(_CLICK_THS, _CLICK_LATCH | min(127, self.TAP_THRESHOLD_MG // _MG_PER_THS_LSB))
        self._write(_TIME_LIMIT, min(127, self.TAP_TIME_LIMIT_MS // ms))
        self._write(_TIME_LATENCY, min(255, self.TAP_LATENCY_MS // ms))
        self._write(_TIME_WINDOW, min(255, self.TAP_WINDOW_MS // ms))
        self._write(_CTRL_REG3, _I1_CLICK)

    def double_tapped(self):
        """Read (and so clear) the click source: True if it latched a double tap."""
        src = self._read(_CLICK_SRC)[0]
        return bool(src & _CLICK_SRC_IA and src & _CLICK_SRC_DCLICK)

    def read_mg(self):
        """One sample (x, y, z) in mg."""
        raw = self._read(_OUT_X_L | _AUTO_INCREMENT, 6)
        out = []
        for i in (0, 2, 4):
            value = raw[i] | (raw[i + 1] << 8)
            if value & 0x8000:
                value -= 0x10000
            out.append((value >> 4) * _MG_PER_DIGIT)
        return out[0], out[1], out[2]
