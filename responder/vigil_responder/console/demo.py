# `vigil responder demo`: the console on a live Vigil, in a temporary folder on loopback, to
# try it in a browser: Mosquitto, the gateway (`vigil gateway run`) forwarding to the console
# (`vigil responder run`), and a simulated wearable running the firmware's core on the
# MicroPython unix port. It prints the console's URL and a throwaway account, then takes the
# wearable's commands from standard input (sos, duress, tap, ...) until quit or EOF.
import pathlib
import secrets
import subprocess
import sys
import tempfile

VIGIL = [sys.executable, "-m", "vigil_tools.cli"]
COMMANDS = "sos, duress, tap (the double tap), battery PCT, silent, resume, help, quit"


def run(args):
    from vigil_tools import demo
    from vigil_tools.broker import Mosquitto, free_port
    from vigil_tools.device_record import new_record

    timeline = demo.Timeline()
    started = []
    with tempfile.TemporaryDirectory(prefix="vigil-console-demo-") as tmp:
        folder = pathlib.Path(tmp)
        try:
            broker = Mosquitto(folder / "broker").start()
            started.append(broker.stop)
            port = free_port()
            gateway_config, config = demo._gateway_config(
                folder, broker.port, "http://127.0.0.1:%d/vigil" % port)
            console = _console(folder, port, config.http.port, demo)
            started.append(lambda: _stop(console))
            record = new_record(demo.DEVICE)
            demo._register(config, record)
            log_path = folder / "gateway.log"
            with open(log_path, "w") as log:
                gateway = subprocess.Popen(VIGIL + ["gateway", "run", "--config",
                                                    str(gateway_config)],
                                           stdout=log, stderr=log)
            started.append(lambda: _stop(gateway))
            demo._wait_healthy(gateway, config.http.port, log_path)
            wearable = demo.Wearable(record, broker.port, str(folder / "wearable"), timeline)
            started.append(wearable.stop)
            print("wearable %08x (Alex Example) is up; type %s" % (demo.DEVICE, COMMANDS),
                  flush=True)
            for line in sys.stdin:
                command = line.strip()
                if command in ("quit", "exit"):
                    break
                if command:
                    wearable.command(command)
        finally:
            for stop in reversed(started):
                try:
                    stop()
                except Exception:
                    pass
    return 0


def _console(folder, port, gateway_port, demo):
    """The console as `vigil responder run`, with a throwaway account; printed for the user."""
    (folder / "console").mkdir()
    for name, value in (("webhook.secret", demo.SECRET.decode()), ("actions.token", demo.TOKEN)):
        path = folder / "console" / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    config = folder / "console" / "responder.toml"
    config.write_text('[console]\nport = %d\ndata_dir = "data"\n\n[webhook]\n'
                      'secret_file = "webhook.secret"\n\n[gateway]\nurl = '
                      '"http://127.0.0.1:%d"\ntoken_file = "actions.token"\n'
                      % (port, gateway_port))
    password = secrets.token_urlsafe(9)
    subprocess.run(VIGIL + ["responder", "user", "add", "demo", "--config", str(config)],
                   input=password + "\n", text=True, check=True, capture_output=True)
    log = open(folder / "console" / "console.log", "w")
    proc = subprocess.Popen(VIGIL + ["responder", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    first = proc.stdout.readline().strip()  # "vigil responder: console at URL ..."
    if not first:
        raise RuntimeError("the console did not start: %s"
                           % (folder / "console" / "console.log").read_text()[-2000:])
    print(first, flush=True)
    print("sign in as demo, password %s (this demo's throwaway account)" % password, flush=True)
    return proc


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
