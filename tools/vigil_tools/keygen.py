"""`vigil keygen`: a new device id, 256-bit key and broker password, in a private file."""
import sys

from . import device_record


def keygen(out_path, device=None, label="", show_key=False, out=sys.stdout):
    device_id = device_record.parse_device_id(device) if device else None
    record = device_record.new_record(device_id, label)
    device_record.save(out_path, record)
    print("device %s: key and broker password written to %s (mode 0600; keep it secret)"
          % (device_record.device_hex(record.device_id), out_path), file=out)
    if show_key:
        print("key %s" % record.key.hex(), file=out)
    return record
