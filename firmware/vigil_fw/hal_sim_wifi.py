# The simulated board's Wi-Fi station scan (hal_sim.SimBoard(wifi_scan=...)), in a module of
# its own so that a simulated unit without wifi_scan (the benchmark's) loads nothing of it.
from .clock import ticks_ms


class SimStation:
    """What WLAN.scan() hears on the simulated board: `access_points`, its (ssid, bssid,
    channel, rssi, security, hidden) tuples, set by a test or the simulator; `scans`, the
    ticks of every scan made."""

    def __init__(self):
        self.access_points = []
        self.scans = []

    def scan(self):
        self.scans.append(ticks_ms())
        return list(self.access_points)
