# The device config's wifi_scan setting (config.py loads this module only for a file that has
# one, and drops it after). Each wrong value is refused in one line naming it.
from vigil_protocol._compat import const

from .config import _need

_EVERY_MAX = const(1000)


def check(given, wifi, protocol):
    """N of a scan for Wi-Fi access points before every N-th check-in (wifiscan.py)."""
    _need(isinstance(given, dict), "wifi_scan must be an object with every")
    for name in given:
        _need(name == "every", "wifi_scan has no setting %r" % name)
    every = given.get("every", 1)
    _need(isinstance(every, int) and not isinstance(every, bool) and 1 <= every <= _EVERY_MAX,
          "wifi_scan.every must be from 1 to %d (check-ins)" % _EVERY_MAX)
    _need(wifi is not None, "wifi_scan needs wifi (the scan is the station's)")
    _need(protocol == 2, "wifi_scan needs protocol 2 (v1 frames cannot be sealed at one size)")
    return every
