# The real board: the only module that touches machine and network. IRQ handlers only set
# a clock.Flag (a plain attribute store, safe in an IRQ); the tasks, polling it with
# wait_event, read the pins and do the work.
import machine
import network

from . import board as pins
from .clock import Flag, sleep_ms, ticks_ms, wait_event
from .flash import Flash
from .lis3dh import LIS3DH, AccelError


class Button:
    def __init__(self, pin_no):
        self.pin = machine.Pin(pin_no, machine.Pin.IN, machine.Pin.PULL_UP)
        self.flag = Flag()
        self.level = self.pin.value()
        self.pin.irq(lambda _pin: self.flag.set(), machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING)

    async def event(self, timeout_ms):
        if not await wait_event(self.flag, timeout_ms):
            return None
        self.flag.clear()
        await sleep_ms(pins.DEBOUNCE_MS)
        level = self.pin.value()
        if level == self.level:
            return None  # a bounce
        self.level = level
        return ("down" if level == 0 else "up", ticks_ms())


class Accel:
    def __init__(self, i2c):
        self.part = LIS3DH(i2c, pins.ACCEL_ADDRESS)
        self.hardware_taps = True
        self.flag = Flag()
        try:
            self.part.start()
        except (OSError, AccelError):
            self.hardware_taps = False  # no tap engine answering: the app samples instead
            return
        self.int_pin = machine.Pin(pins.ACCEL_INT1_PIN, machine.Pin.IN)
        self.int_pin.irq(lambda _pin: self.flag.set(), machine.Pin.IRQ_RISING)

    async def double_tap(self, timeout_ms):
        if not await wait_event(self.flag, timeout_ms):
            return False
        self.flag.clear()
        return self.part.double_tapped()

    def samples(self):
        try:
            return (self.part.read_mg(),)
        except OSError:
            return ()


class WiFi:
    RETRY_MS = 2000

    def __init__(self, config):
        self.config = config
        self.wlan = network.WLAN(network.STA_IF)

    async def connect(self):
        if self.wlan.isconnected():
            return
        self.wlan.active(True)
        self.wlan.connect(self.config["ssid"], self.config.get("password", ""))
        for _ in range(30):
            if self.wlan.isconnected():
                return
            await sleep_ms(500)
        raise OSError("wifi: no connection to %s" % self.config["ssid"])


class Board:
    name = "esp32"

    def __init__(self, wifi_config=None):
        self.flash = Flash(pins.FLASH_ROOT)
        self.sos_button = Button(pins.SOS_BUTTON_PIN)
        self.duress_button = Button(pins.DURESS_BUTTON_PIN)
        i2c = machine.I2C(pins.I2C_ID, sda=machine.Pin(pins.I2C_SDA_PIN),
                          scl=machine.Pin(pins.I2C_SCL_PIN), freq=pins.I2C_FREQ)
        self.accel = Accel(i2c)
        self.motor = machine.Pin(pins.VIBRATION_PIN, machine.Pin.OUT, value=0)
        self.leds = {c: machine.Pin(p, machine.Pin.OUT, value=0) for c, p in pins.LED_PINS.items()}
        self.adc = machine.ADC(machine.Pin(pins.BATTERY_ADC_PIN))
        self.adc.atten(machine.ADC.ATTN_11DB)
        self.network = WiFi(wifi_config) if wifi_config else None
        self.wdt = None

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
