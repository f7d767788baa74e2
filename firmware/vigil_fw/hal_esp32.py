# The real board: with wifi.py, the only modules that touch machine and network. IRQ handlers only record
# the edge and its time in the board's EdgeRing, or set the accelerometer's flag (hard IRQs:
# nothing is allocated), and wake the task that does the work.
import machine

from . import board as pins
from . import inputs
from .clock import Flag, sleep_ms
from .flash import Flash
from .lis3dh import LIS3DH, AccelError
from .wifi import WiFi


class Button:
    def __init__(self, ring, pin_no, down_code):
        self.pin = machine.Pin(pin_no, machine.Pin.IN, machine.Pin.PULL_UP)
        self._ring = ring
        self._down = down_code
        # Bound once here: an IRQ must not build a bound method each time it fires.
        self.pin.irq(self._edge, machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING, hard=True)

    def _edge(self, pin):
        # Active low: level 0 is a press. The input task debounces.
        self._ring.push(self._down + pin.value())


class Accel:
    """The LIS3DH: its tap engine's INT2 records an edge in the EdgeRing, as the buttons do;
    its INT1 (FIFO watermark or movement, lis3dh.py) sets `flag`, which wakes the man-down
    sampler. Both are hard IRQs that allocate nothing; the task reads the part."""

    def __init__(self, ring, i2c):
        self.part = LIS3DH(i2c, pins.ACCEL_ADDRESS)
        self.hardware_taps = True
        self.present = True
        self.flag = Flag()
        self._ring = ring
        try:
            self.part.start()
        except (OSError, AccelError):
            # No part answering: no tap engine and no man-down (the app says so).
            self.hardware_taps = False
            self.present = False
            return
        self.int2_pin = machine.Pin(pins.ACCEL_INT2_PIN, machine.Pin.IN)
        self.int2_pin.irq(self._tap, machine.Pin.IRQ_RISING, hard=True)
        self.int1_pin = machine.Pin(pins.ACCEL_INT1_PIN, machine.Pin.IN)
        self.int1_pin.irq(self._int1, machine.Pin.IRQ_RISING, hard=True)

    def _tap(self, _pin):
        self._ring.push(inputs.TAP)

    def _int1(self, _pin):
        self.flag.set()

    def start(self):
        pass  # the part runs at its data rate all the time (its tap engine needs it)

    def double_tapped(self):
        """Read (and clear) the tap engine's source register after its interrupt."""
        return self.part.double_tapped()

    def wake_on(self, what):
        self.part.wake_on(what)

    def moving(self):
        return self.part.moving()

    def read_mg(self, out):
        """The samples waiting in the part's FIFO into `out` (see LIS3DH.read_mg); 0 if the
        bus failed this time."""
        try:
            return self.part.read_mg(out)
        except OSError:
            return 0


def gnss_uart(uart_id, rx, tx, baud):
    """The GNSS module's UART as an asyncio stream: the task that reads it waits in the
    scheduler until bytes have come (select on the UART), never in a loop of its own. Its
    receive buffer holds a 1 Hz receiver's whole burst (GGA, RMC, GSA, GSV...: 400-500
    bytes), so a task held up by other work loses none of it."""
    import asyncio
    return asyncio.StreamReader(machine.UART(uart_id, baudrate=baud, rx=rx, tx=tx, timeout=0,
                                             rxbuf=512))


class Board:
    name = "esp32"

    def __init__(self, wifi_config=None, gnss=None):
        """`gnss`: the config's (uart, rx, tx, baud), or None (no GNSS module: no UART)."""
        # First: the UART is the one thing here whose setting comes from the config, and
        # one that cannot open leaves the board without GNSS (the app says so), nothing more.
        self.gnss = None
        self.gnss_error = None
        if gnss is not None:
            try:
                self.gnss = gnss_uart(*gnss)
            except (ValueError, OSError) as exc:
                self.gnss_error = repr(exc)
        self.flash = Flash(pins.FLASH_ROOT)
        self.inputs = inputs.EdgeRing()
        self.sos_button = Button(self.inputs, pins.SOS_BUTTON_PIN, inputs.SOS_DOWN)
        self.duress_button = Button(self.inputs, pins.DURESS_BUTTON_PIN, inputs.DURESS_DOWN)
        i2c = machine.I2C(pins.I2C_ID, sda=machine.Pin(pins.I2C_SDA_PIN),
                          scl=machine.Pin(pins.I2C_SCL_PIN), freq=pins.I2C_FREQ)
        self.accel = Accel(self.inputs, i2c)
        self.motor = machine.Pin(pins.VIBRATION_PIN, machine.Pin.OUT, value=0)
        self.leds = {c: machine.Pin(p, machine.Pin.OUT, value=0) for c, p in pins.LED_PINS.items()}
        self.adc = machine.ADC(machine.Pin(pins.BATTERY_ADC_PIN))
        self.adc.atten(machine.ADC.ATTN_11DB)
        self.network = WiFi(wifi_config) if wifi_config else None
        self.wdt = None

    def wifi_scan(self):
        """The access points the station hears (wifi_scan in the config needs wifi, so the
        station exists). WLAN.scan() is active and blocks the loop: see wifiscan.py."""
        station = self.network
        if station is None:
            raise OSError("wifi: no station to scan with")  # (the config check forbids it)
        return station.wlan.scan()

    def battery_percent(self):
        mv = self.adc.read_uv() * 2 // 1000
        span = pins.BATTERY_FULL_MV - pins.BATTERY_EMPTY_MV
        return max(0, min(100, (mv - pins.BATTERY_EMPTY_MV) * 100 // span))

    async def play(self, pulses, colour):
        led = self.leds.get(colour) if colour else None
        if led:
            led.value(1)
        for on_ms, off_ms in pulses:
            self.motor.value(1)
            await sleep_ms(on_ms)
            self.motor.value(0)
            await sleep_ms(off_ms)
        if led:
            led.value(0)

    def watchdog_start(self, timeout_ms):
        self.wdt = machine.WDT(timeout=timeout_ms)

    def watchdog_feed(self):
        if self.wdt is not None:
            self.wdt.feed()
