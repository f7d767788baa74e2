# The device config's gnss setting (config.py loads this module only for a file that has one:
# a unit without GNSS keeps nothing of it). Each wrong value is refused in one line naming it.
from .config import _need


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check(given, protocol):
    """(uart id, rx pin, tx pin, baud) of the GNSS module the file names. The UART is 1 or 2
    (0 is the console provisioning uses), the baud one NMEA receivers ship with, and the pins
    free on the board's map: not one board.py gives a part, nor one the chip needs (strapping
    0, 3, 45, 46, USB 19, 20, UART0 43, 44, flash and PSRAM 26-37)."""
    _need(isinstance(given, dict), "gnss must be an object with uart, rx, tx, baud")
    for name in given:
        _need(name in ("uart", "rx", "tx", "baud"), "gnss has no setting %r" % name)
    uart = given.get("uart", 1)
    _need(_int(uart) and uart in (1, 2), "gnss.uart must be 1 or 2 (UART 0 is the console)")
    from . import board as pins
    taken = [pins.SOS_BUTTON_PIN, pins.DURESS_BUTTON_PIN, pins.VIBRATION_PIN,
             pins.BATTERY_ADC_PIN, pins.I2C_SDA_PIN, pins.I2C_SCL_PIN, pins.ACCEL_INT1_PIN,
             pins.ACCEL_INT2_PIN, 0, 3, 19, 20, 43, 44, 45, 46]
    taken.extend(pins.LED_PINS.values())
    rx = given.get("rx")
    tx = given.get("tx")
    for name, pin in (("rx", rx), ("tx", tx)):
        _need(_int(pin) and 0 <= pin <= 48 and pin not in taken and not 26 <= pin <= 37,
              "gnss.%s must be a free GPIO (0-48, not one the board uses or the chip needs: "
              "see firmware/vigil_fw/board.py)" % name)
    _need(rx != tx, "gnss.rx and gnss.tx must be different pins")
    baud = given.get("baud", 9600)
    _need(_int(baud) and baud in (4800, 9600, 19200, 38400, 57600, 115200),
          "gnss.baud must be one of 4800, 9600, 19200, 38400, 57600, 115200")
    # Every alarm and check-in is sealed at one size (SPEC section 13): only v2 frames can be.
    _need(protocol == 2, "gnss needs protocol 2 (v1 frames cannot be sealed at one size)")
    return (uart, rx, tx, baud)
