# The wearable's links to the gateway sit behind one small interface, so MQTT and BLE can run
# side by side (an alarm goes out on every link that is up).
#
#   link.name               short name for logs
#   link.up                 True while the link can carry frames
#   link.status             why the link is down, in a few words ("" while up), for the console
#   await link.run(inbox, woke)
#                           loop that never returns on its own: keeps the link up, puts verified-
#                           or-not downlink frames in `inbox`, and calls woke() each time the link
#                           comes up (the sender has frames waiting). It may raise: the app logs
#                           it, counts it and starts run() again.
#   await link.send(frame)  True once the transport has taken the frame (e.g. MQTT PUBACK)
#
# Nothing in a link may block the event loop, and every wait on the peer has a deadline; while
# idle a link waits on its socket or radio, not on a timer.
from .clock import Flag


class Inbox:
    """Downlink frames from every link, in arrival order. Bounded; counts what it drops.
    `ready` is set whenever a frame is put: the downlink task waits on it."""

    LIMIT = 32

    def __init__(self):
        self.frames = []
        self.dropped = 0
        self.ready = Flag()

    def put(self, frame, link_name):
        # Called from link tasks and transport callbacks: only hands the frame over.
        if len(self.frames) >= self.LIMIT:
            self.dropped += 1  # the gateway resends unacknowledged downlinks
            return
        self.frames.append((bytes(frame), link_name))
        self.ready.set()

    def take(self):
        frames = self.frames
        self.frames = []
        return frames
