"""pysiaalarm's DC-09 receiver on loopback, for the forwarding tests: the alarm receiving
centre's side, with every event it accepted in a queue."""
import queue
import socket
import time

from pysiaalarm import SIAAccount, SIAClient


def start_receiver(port, accounts, events=None):
    """Start a receiver on `port` for `accounts` ({number: key or None}); returns the client
    (call .stop()) once it accepts connections. Accepted events go to `events` (a Queue)."""
    events = queue.Queue() if events is None else events
    client = SIAClient("127.0.0.1", port,
                       [SIAAccount(number, key) if key else SIAAccount(number)
                        for number, key in accounts.items()],
                       function=events.put)
    client.start()
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    client.events = events
    return client
