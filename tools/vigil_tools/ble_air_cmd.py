"""`vigil ble-air`: an emulated Bluetooth LE radio space for simulations and demos on machines
without Bluetooth: bumble controllers on one link (vigil_tools.ble_rig), one per transport.
A bumble host (the gateway's `ble.hci`, `vigil sim --link ble`) reaches its controller over
TCP; a MicroPython wearable built with `bluetooth` (vigil_tools.mpy32) over a pty, as its H4
UART ($MICROPYBTUART)."""
import asyncio


def register(sub):
    air = sub.add_parser("ble-air", help="emulated BLE radio for simulated wearables and the "
                                         "gateway (no Bluetooth hardware needed)")
    air.add_argument("transports", nargs="+", metavar="TRANSPORT",
                     help="one per device: tcp-server:127.0.0.1:7001 for a bumble host, "
                          "pty:/tmp/hci0 for a MicroPython wearable")
    air.set_defaults(func=run)


def run(args):
    from .ble_rig import serve  # (bumble: loaded by this command only, not by every `vigil`)

    print("vigil: emulated BLE air with %d controllers: %s" % (len(args.transports),
                                                              " ".join(args.transports)),
          flush=True)
    try:
        asyncio.run(serve(args.transports))
    except KeyboardInterrupt:
        pass
    return 0
