# BLE beacon scans ("beacons" in the config): where the wearer is indoors, as the strongest
# iBeacons and Eddystone-UIDs it hears (beacons.Strongest), in location extension 0x05 of every
# alarm and check-in (protocol/SPEC.md section 4). Loaded only when the config has it.
#
# Rules:
#   an alarm never waits for a scan: it is sealed at once with what the last scan heard (with
#     that scan's true, growing age; nothing before a first scan), and raising it starts a
#     scan; when the scan ends, a check-in carries what it heard, which the gateway takes as a
#     location update of the open incident (SPEC section 4: an alarm is never held back)
#   a check-in while an alarm is open scans first (a fresher place for the responder); with
#     at_checkin every check-in does. Otherwise an idle wearable never scans: the radio's
#     receiver is the costly part (see firmware/README.md, Location)
#   the scan is passive (aioble.scan(..., active=False)): the radio only listens, it sends no
#     scan request, so nothing on the air says that a wearable scans, or when (an alarm's
#     scan included)
#   one scan at a time: asked while one runs, the one running serves
#   what a scan heard replaces what the last one heard, nothing heard included (a place heard
#     long ago is not sent as if the wearer were still there)
#   nothing here shows anything to the wearer, in duress or not: no feedback at all
from vigil_protocol._compat import const

from .beacons import Strongest
from .clock import Flag, ticks_diff, ticks_ms

_INTERVAL_US = const(30000)  # window = interval: the receiver on for the whole scan
_WITH_FIX = const(2)  # entries a 48-byte frame holds beside a fix; without one, 5 (SPEC 4)


class Scanner:
    def __init__(self, aioble, scan_ms, at_checkin):
        """`aioble` is micropython-lib's module (or a stand-in with its scan interface)."""
        self.aioble = aioble
        self.scan_ms = scan_ms
        self.at_checkin = at_checkin
        self.heard = Strongest()
        self.wake = Flag()  # an alarm was raised: scan, then send a location update
        self.running = False
        self.scans = 0
        self._entries = None  # the last scan's ((short id, rssi), ...), strongest first
        self._ended = ticks_ms()  # ticks when it ended

    async def scan(self):
        """One passive scan of scan_ms into self.heard; returns once it is over (at once if
        one is running already). True if it ran."""
        if self.running:
            return False
        self.running = True
        heard = self.heard
        heard.clear()
        try:
            async with self.aioble.scan(self.scan_ms, _INTERVAL_US, _INTERVAL_US,
                                        active=False) as results:
                async for result in results:
                    if result.adv_data:
                        heard.advert(result.adv_data, result.rssi)
        finally:
            now = ticks_ms()
            heard.finish(now)
            found = heard.entries(now)
            self._entries = None if found is None else found[1]
            self._ended = now
            self.scans += 1
            self.running = False
        return True

    def entries(self, now, with_fix):
        """(scan age s, entries) as Alarm(beacons=...) takes it, at most what a 48-byte frame
        holds beside a fix or without one; None before a first scan that heard a beacon."""
        entries = self._entries
        if entries is None:
            return None
        most = _WITH_FIX if with_fix else len(entries)
        return ((max(ticks_diff(now, self._ended), 0) + 999) // 1000, entries[:most])
