# The board's Wi-Fi station, for the MQTT link: it awaits connect() before every attempt.
#
# Rules:
#   connect() never blocks: it starts the station only if it must, then awaits between looks
#     at wlan.status() until there is an IP address, the driver reports a failure, or
#     CONNECT_MS has passed
#   a failure raises WifiError (an OSError) whose text names the network and the reason the
#     driver gives (wrong password, no access point, ...); never the password
#   the station retries RECONNECTS times by itself, after a drop too: connect() starts it
#     again only once it has given up (idle or a failure status), never while it is trying
import network
from vigil_protocol._compat import const

from .clock import sleep_ms, ticks_diff, ticks_ms

_HANDSHAKE_TIMEOUT = const(15)  # ESP-IDF's 4WAY_HANDSHAKE_TIMEOUT: usually a wrong password


class WifiError(OSError):
    """Why the wearable has no Wi-Fi, in words (str(error))."""


class WiFi:
    CHECK_MS = 250
    CONNECT_MS = 20000
    RECONNECTS = 3

    def __init__(self, config):
        self.config = config
        self.wlan = network.WLAN(network.STA_IF)

    async def connect(self):
        wlan = self.wlan
        status = wlan.status()
        if status == network.STAT_GOT_IP:
            return
        if status != network.STAT_CONNECTING:
            wlan.active(True)
            wlan.config(reconnects=self.RECONNECTS)  # then status() says why it gave up
            wlan.connect(self.config["ssid"], self.config.get("password", ""))
        start = ticks_ms()
        while True:
            await sleep_ms(self.CHECK_MS)
            status = wlan.status()
            if status == network.STAT_GOT_IP:
                return
            if status != network.STAT_CONNECTING:
                raise WifiError(self.reason(status))
            if ticks_diff(ticks_ms(), start) >= self.CONNECT_MS:
                raise WifiError("wifi: no connection to %s within %ds"
                                % (self.config["ssid"], self.CONNECT_MS // 1000))

    def reason(self, status):
        ssid = self.config["ssid"]
        if status == network.STAT_WRONG_PASSWORD:
            return "wifi: wrong password for %s" % ssid
        if status == network.STAT_NO_AP_FOUND:
            return "wifi: no access point %s found" % ssid
        if status == network.STAT_HANDSHAKE_TIMEOUT or status == _HANDSHAKE_TIMEOUT:
            return "wifi: no handshake with %s (wrong password?)" % ssid
        if status == network.STAT_BEACON_TIMEOUT:
            return "wifi: access point %s stopped answering" % ssid
        if status == network.STAT_CONNECT_FAIL:
            return "wifi: %s refused the connection" % ssid
        return "wifi: no connection to %s (status %d)" % (ssid, status)
