# The console for the demos, in their temporary folder: `vigil responder run` with throwaway
# accounts, on loopback. `vigil responder demo` is `vigil demo` without the scripted
# procedures: the console on a live Vigil (Mosquitto, the gateway forwarding to the console, a
# simulated wearable running the firmware's core on the MicroPython unix port), its URL and
# account printed, the wearable's commands (sos, duress, tap, ...) taken on standard input
# until quit or end of input.
import secrets
import subprocess
import sys

VIGIL = [sys.executable, "-m", "vigil_tools.cli"]


def run(args):
    from vigil_tools import demo

    return demo.run(args, procedures=False)


def start(folder, port, gateway_port, secret, token, accounts):
    """The console as `vigil responder run` in folder/console, forwarding its steps to the
    gateway's actions API; one throwaway password per account name. Returns (process, url,
    {name: password}) once it serves."""
    folder = folder / "console"
    folder.mkdir()
    for name, value in (("webhook.secret", secret), ("actions.token", token)):
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    config = folder / "responder.toml"
    config.write_text('[console]\nport = %d\ndata_dir = "data"\n\n[webhook]\n'
                      'secret_file = "webhook.secret"\n\n[gateway]\nurl = '
                      '"http://127.0.0.1:%d"\ntoken_file = "actions.token"\n'
                      % (port, gateway_port))
    passwords = {}
    for name in accounts:
        passwords[name] = secrets.token_urlsafe(9)
        subprocess.run(VIGIL + ["responder", "user", "add", name, "--config", str(config)],
                       input=passwords[name] + "\n", text=True, check=True,
                       capture_output=True)
    log = open(folder / "console.log", "w")
    proc = subprocess.Popen(VIGIL + ["responder", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    first = proc.stdout.readline().strip()  # "vigil responder: console at URL (webhook ...)"
    if "console at " not in first:
        stop(proc)
        raise RuntimeError("the console did not start: %s"
                           % (folder / "console.log").read_text()[-2000:])
    return proc, first.split("console at ")[1].split()[0], passwords


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
