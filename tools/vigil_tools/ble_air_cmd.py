"""`vigil ble-air`: an emulated Bluetooth LE radio space for simulations and demos on machines
without Bluetooth (bumble controllers on one link, reached over TCP)."""
import asyncio

from vigil_gateway.bumble_air import serve_air


def register(sub):
    air = sub.add_parser("ble-air", help="emulated BLE radio for simulated wearables and the "
                                         "gateway (no Bluetooth hardware needed)")
    air.add_argument("transports", nargs="+", metavar="TRANSPORT",
                     help="one per device, e.g. tcp-server:127.0.0.1:7001")
    air.set_defaults(func=run)


def run(args):
    print("vigil: emulated BLE air with %d controllers: %s" % (len(args.transports),
                                                              " ".join(args.transports)),
          flush=True)
    try:
        asyncio.run(serve_air(args.transports))
    except KeyboardInterrupt:
        pass
    return 0
