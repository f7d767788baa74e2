# What the wearer feels and sees. Each pattern claims only what its event proves.
#
# Rules:
#   a pattern is a tuple of (vibrate_ms, pause_ms) pulses, plus an LED colour or None
#   "received" (the gateway has it) must never feel like "help is coming"
#   the prompt pattern is distinct from every other one: the wearer must recognise it
#   duress: nothing. The only guard is the caller (alarms.py returns no pattern for DURESS),
#   and Feedback.show() itself refuses to run while a duress alarm is open.
PATTERNS = {
    "sos_armed": (((600, 0),), None),                       # held long enough: release
    "sos_cancelled": (((80, 120), (80, 0)), None),
    "sos_raised": (((300, 200), (300, 0)), "red"),
    "received": (((150, 0),), "amber"),                     # the gateway has it
    "delivered": (((150, 150), (150, 0)), "amber"),         # the responders have it
    "acknowledged": (((400, 0),), "green"),                 # a responder has taken it
    "prompt": (((60, 90), (60, 90), (60, 600), (60, 90), (60, 90), (60, 0)), "blue"),
    "confirmed": (((150, 100), (400, 0)), "blue"),          # your double tap was sent
    "help_dispatched": (((800, 0),), "green"),
    "resolved": (((100, 0),), None),
    "low_battery": (((50, 100), (50, 0)), "amber"),
}


class Feedback:
    """Plays patterns on the board's vibration motor and LED. Records what it played."""

    def __init__(self, board):
        self.board = board
        self.played = []
        self.duress_open = False  # set by the app while any duress alarm is open

    async def show(self, name):
        if name is None or self.duress_open:
            return
        pulses, colour = PATTERNS[name]
        self.played.append(name)
        await self.board.play(pulses, colour)
