# The one board file: which pins and parts this wearable has (an ESP32-S3 wearable).
# Change these for another board; nothing else in the firmware names a pin.
SOS_BUTTON_PIN = 0        # front button, active low
DURESS_BUTTON_PIN = 1     # hidden side button, active low
VIBRATION_PIN = 2         # motor driver, active high
LED_PINS = {"red": 3, "amber": 4, "green": 5, "blue": 6}
BATTERY_ADC_PIN = 7       # through a 1:2 divider
BATTERY_EMPTY_MV = 3300
BATTERY_FULL_MV = 4150
I2C_ID = 0
I2C_SDA_PIN = 8
I2C_SCL_PIN = 9
I2C_FREQ = 400000
ACCEL_ADDRESS = 0x18      # LIS3DH, SA0 low
ACCEL_INT1_PIN = 10
FLASH_ROOT = "/vigil"
DEBOUNCE_MS = 20
