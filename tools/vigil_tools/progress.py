"""A progress bar for long copies: redrawn in place on a terminal, one line per finished item
otherwise (so logs and CI output stay readable)."""
import sys


class Progress:
    WIDTH = 30

    def __init__(self, total, label, stream=None):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def _line(self, done, item):
        done = min(done, self.total)
        filled = self.WIDTH * done // self.total
        return "%s [%s%s] %3d%% %6.1f/%.1f kB %s" % (
            self.label, "#" * filled, "." * (self.WIDTH - filled), 100 * done // self.total,
            done / 1000, self.total / 1000, item)

    def update(self, done, item=""):
        """Part of an item is done (redrawn on a terminal only)."""
        if self.live:
            self.stream.write("\r\033[K" + self._line(done, item))
            self.stream.flush()

    def item_done(self, done, item=""):
        if self.live:
            self.update(done, item)
        else:
            self.stream.write(self._line(done, item) + "\n")
            self.stream.flush()

    def finish(self):
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
