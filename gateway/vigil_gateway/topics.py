# MQTT topic layout (protocol/SPEC.md §9): <prefix>/up/<dev>, <prefix>/down/<dev>,
# <prefix>/status/<dev>, where <dev> is the device id as exactly 8 lowercase hex digits.
UP = "up"
STATUS = "status"
DOWN = "down"
_HEX = frozenset("0123456789abcdef")


class Topics:
    def __init__(self, prefix):
        self.prefix = prefix
        self._head = prefix + "/"

    def uplink_filter(self, shared_group=""):
        topic = "%s/%s/+" % (self.prefix, UP)
        return "$share/%s/%s" % (shared_group, topic) if shared_group else topic

    def status_filter(self, shared_group=""):
        topic = "%s/%s/+" % (self.prefix, STATUS)
        return "$share/%s/%s" % (shared_group, topic) if shared_group else topic

    def down(self, device_id):
        return "%s/%s/%08x" % (self.prefix, DOWN, device_id)

    def up(self, device_id):
        return "%s/%s/%08x" % (self.prefix, UP, device_id)

    def parse(self, topic):
        """(UP or STATUS, device_id) for a well-formed uplink-side topic, else None."""
        if not topic.startswith(self._head):
            return None
        rest = topic[len(self._head):].split("/")
        if len(rest) != 2 or rest[0] not in (UP, STATUS):
            return None
        dev = rest[1]
        if len(dev) != 8 or not _HEX.issuperset(dev):
            return None
        device_id = int(dev, 16)
        if device_id == 0:
            return None
        return rest[0], device_id
