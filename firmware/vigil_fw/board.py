# The one board file: which pins and parts this wearable has. Nothing else in the firmware
# names a pin. This map is for an ESP32-S3 module (ESP32-S3-WROOM-1, as on the
# ESP32-S3-DevKitC-1), chosen so that no input or output sits on a pin the chip needs:
#   strapping pins 0, 3, 45, 46 (GPIO0 held low through a reset enters download mode: never a
#     button), USB 19/20, UART0 43/44 (the console provisioning uses), flash/PSRAM 26-37;
#   the battery on ADC1 (GPIO1-10): ADC2 cannot be read while Wi-Fi is on.
# A classic ESP32 needs a map of its own: there 0, 2, 5, 12 and 15 strap the boot, 1 and 3
# are UART0, 6-11 are the flash and 34-39 are inputs without pull-ups.
SOS_BUTTON_PIN = 4        # front button to ground, internal pull-up
DURESS_BUTTON_PIN = 5     # hidden side button to ground, internal pull-up
VIBRATION_PIN = 6         # motor driver, active high
LED_PINS = {"red": 7, "amber": 15, "green": 16, "blue": 17}
BATTERY_ADC_PIN = 2       # ADC1 channel 1, through a 1:2 divider
BATTERY_EMPTY_MV = 3300
BATTERY_FULL_MV = 4150
I2C_ID = 0
I2C_SDA_PIN = 8
I2C_SCL_PIN = 9
I2C_FREQ = 400000
ACCEL_ADDRESS = 0x18      # LIS3DH, SA0 low
ACCEL_INT1_PIN = 10       # FIFO watermark or movement: the man-down sampler
ACCEL_INT2_PIN = 11       # the tap engine
FLASH_ROOT = "/vigil"
