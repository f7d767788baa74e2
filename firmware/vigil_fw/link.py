# The wearable's links to the gateway sit behind one small interface, so MQTT and BLE can run
# side by side (an alarm goes out on every link that is up).
#
#   link.name           short name for logs
#   link.up             True while the link can carry frames
#   link.progress       grows while the link's task is alive (the supervisor watches it)
#   await link.run(inbox)   supervised loop that never returns; puts downlinks in inbox
#   await link.send(frame)  True once the transport has taken the frame (e.g. MQTT PUBACK)


class Inbox:
    """Downlink frames from every link, in arrival order. Bounded; counts what it drops."""

    LIMIT = 32

    def __init__(self):
        self.frames = []
        self.dropped = 0

    def put(self, frame, link_name):
        # Called from link tasks and transport callbacks: only hands the frame over.
        if len(self.frames) >= self.LIMIT:
            self.dropped += 1  # the gateway resends unacknowledged downlinks
            return
        self.frames.append((bytes(frame), link_name))

    def take(self):
        frames = self.frames
        self.frames = []
        return frames
