# Wi-Fi access points as a hint of where the wearer is ("wifi_scan" in the config): the
# strongest BSSIDs the station hears (beacons.Strongest), in location extension 0x06 of the
# alarms and check-ins that carry neither a GNSS fix nor a beacon (protocol/SPEC.md section 4).
# The gateway names the place from its beacons table, as it does for BLE beacons. Loaded only
# when the config has it.
#
# Rules:
#   scans follow the check-in schedule and nothing else: the check-in task scans before every
#     `every`-th check-in it sends (the first included), never because an alarm was raised
#     or is open, duress or not. The station's scan is active on the ESP32 (WLAN.scan(): a
#     probe request from the unit's own address on each channel, an address its traffic
#     carries anyway), so when it scans must say nothing about an alarm
#   an alarm never waits for a scan: it carries the last scan's access points with their
#     true, growing age, and only where it carries neither a fix nor a beacon
#   what a scan heard replaces what the last one heard, nothing heard included; a scan the
#     driver refuses (OSError) counts as one that heard nothing, and is counted and logged
#   WLAN.scan() holds the event loop for the scan (1-3 s on an ESP32): a button edge in that
#     time is kept by its IRQ with its time (inputs.EdgeRing) and judged when it returns
#   nothing here shows anything to the wearer
from .beacons import Strongest
from .clock import ticks_diff, ticks_ms


class WifiScanner:
    def __init__(self, scan, every, log=print):
        """`scan()` is the board's: WLAN.scan()'s list of (ssid, bssid, channel, rssi,
        security, hidden)."""
        self._scan = scan
        self.every = every
        self.log = log
        self.heard = Strongest()
        self.checkins = 0  # check-ins the schedule has sent this boot
        self.scans = 0
        self.failures = 0
        self._entries = None  # the last scan's ((short id, rssi), ...), strongest first
        self._ended = ticks_ms()

    def at_checkin(self):
        """The check-in task is about to send a check-in on its schedule: scan first if it is
        the every-th."""
        if self.checkins % self.every == 0:
            self.scan()
        self.checkins += 1

    def scan(self):
        heard = self.heard
        heard.clear()
        try:
            for ap in self._scan():
                heard.access_point(ap[1], ap[3])
        except OSError as exc:
            self.failures += 1
            self.log("vigil: wifi scan failed: %r" % (exc,))
        now = ticks_ms()
        found = heard.entries(now)
        self._entries = None if found is None else found[1]
        self._ended = now
        self.scans += 1

    def entries(self, now):
        """(scan age s, entries) as CheckIn(wifi=...) takes it; None before a first scan
        that heard an access point."""
        if self._entries is None:
            return None
        return ((max(ticks_diff(now, self._ended), 0) + 999) // 1000, self._entries)
