"""`vigil keygen`: a new device id, 256-bit key and broker password, in a private file.

Safe to run again: a record already at --out is kept as it is (its key may be in use), and
said so; only a --device other than the one it holds is an error. A missing folder for --out is
made (0700)."""
import os
import sys

from . import ToolError, device_record


def keygen(out_path, device=None, label="", show_key=False, out=sys.stdout):
    device_id = device_record.parse_device_id(device) if device else None
    out_path = str(out_path)
    if os.path.exists(out_path):
        record = device_record.load(out_path)
        if device_id is not None and record.device_id != device_id:
            raise ToolError("%s holds the record of device %s, not %s: not overwriting a device "
                            "record (its key may be in use)" % (
                                out_path, device_record.device_hex(record.device_id),
                                device_record.device_hex(device_id)))
        print("device %s: kept the record in %s (it exists; a key in use is never replaced)"
              % (device_record.device_hex(record.device_id), out_path), file=out)
    else:
        folder = os.path.dirname(out_path)
        if folder and not os.path.isdir(folder):
            try:
                os.makedirs(folder, mode=0o700)
            except OSError as exc:
                raise ToolError("cannot make the folder %s for %s: %s" % (
                    folder, out_path, exc.strerror)) from None
        record = device_record.new_record(device_id, label)
        device_record.save(out_path, record)
        print("device %s: key and broker password written to %s (mode 0600; keep it secret)"
              % (device_record.device_hex(record.device_id), out_path), file=out)
    if show_key:
        print("key %s" % record.key.hex(), file=out)
    return record
