# The console's HTTP face (aiohttp; Jinja2 templates, autoescaped; no front-end build):
#   POST <webhook_path>            the gateway's signed webhook (receiver.py's rules)
#   GET  /login, POST /login       sign in; POST /logout
#   GET  /                         the live queue: alarms newest first, faults in their lane
#   GET  /incidents/{id}           one incident: its procedure, the police script on duress
#   POST /incidents/{id}/take      take it (or take it over, explicitly, audited)
#   POST /incidents/{id}/steps/{s} one step of the procedure (procedures.py's rules)
#   GET  /events                   server-sent events: what changed
#   GET  /figures?month=YYYY-MM    alarm-handling times, per incident and the month's summary
#   GET  /queue, /incidents/{id}/panel   the fragments the page fetches again on an event
#   GET  /healthz, /metrics        no personal data; no login
# Every other page and action needs a session; every POST but the login and the webhook
# carries the session's CSRF token.
import asyncio
import logging
import time
from pathlib import Path

import jinja2
from aiohttp import web

from . import auth, figures, procedures, views
from .gateway import GatewayClient
from .live import Hub
from .receiver import Receiver

log = logging.getLogger("vigil.responder")
HERE = Path(__file__).parent
ALARM_KINDS = ("SOS", "DURESS", "FALL", "NO_MOTION")

STATE = web.AppKey("state", object)


class Console:
    """The application's parts, shared by the handlers."""

    def __init__(self, store, config, gateway=None):
        self.store = store
        self.config = config
        self.receiver = Receiver(store, config.secret, config.tolerance_s)
        self.sessions = auth.Sessions(store)
        self.hub = Hub()
        self.gateway = gateway or GatewayClient(config.gateway_url, config.token,
                                                config.ca_file)
        self._locks = {}
        self.secure_cookie = bool(config.cert_file)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True, undefined=jinja2.StrictUndefined)
        self.templates.filters["clock"] = views.clock
        self.templates.filters["duration"] = figures.duration
        self.templates.globals["handling_times"] = figures.incident_times

    def lock(self, incident_id):
        """One step at a time per incident (its order is checked against the store), while
        other incidents' steps go on."""
        return self._locks.setdefault(incident_id, asyncio.Lock())


def make_app(console):
    app = web.Application(middlewares=[_guard], client_max_size=2 << 20)
    app[STATE] = console
    app.router.add_post(console.config.webhook_path, _webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/login", _login_page)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/", _queue_page)
    app.router.add_get("/queue", _queue_fragment)
    app.router.add_get("/events", _events)
    app.router.add_get("/figures", _figures)
    app.router.add_get("/incidents/{id:[0-9]{1,12}}", _incident_page)
    app.router.add_get("/incidents/{id:[0-9]{1,12}}/panel", _incident_panel)
    app.router.add_post("/incidents/{id:[0-9]{1,12}}/take", _take)
    app.router.add_post("/incidents/{id:[0-9]{1,12}}/steps/{step:[a-z_]{1,40}}", _step)
    app.router.add_static("/static", str(HERE / "static"))

    async def closing(app):
        await console.gateway.close()
    app.on_cleanup.append(closing)
    return app


_OPEN = {"/login", "/healthz", "/metrics"}


@web.middleware
async def _guard(request, handler):
    console = request.app[STATE]
    path = request.path
    if path == console.config.webhook_path or path in _OPEN or path.startswith("/static/"):
        return await handler(request)
    session = console.sessions.lookup(request.cookies.get(auth.COOKIE))
    if session is None:
        if request.method == "GET" and path != "/events":
            raise web.HTTPSeeOther("/login")
        return web.Response(status=401, text="sign in first\n")
    request["responder"], request["csrf"] = session
    if request.method == "POST":
        form = await request.post()
        given = request.headers.get("X-CSRF-Token") or form.get("csrf", "")
        if not auth.csrf_ok(session[1], given):
            log.warning("request refused: missing or wrong CSRF token path=%s", path)
            return web.Response(status=403, text="missing or wrong CSRF token\n")
        request["form"] = form
    return await handler(request)


def _render(request, name, status=200, **values):
    console = request.app[STATE]
    html = console.templates.get_template(name).render(
        responder=request.get("responder"), csrf=request.get("csrf"), now=time.time(),
        **values)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
                                 "X-Content-Type-Options": "nosniff"})


# --- the webhook -----------------------------------------------------------------------------

async def _webhook(request):
    console = request.app[STATE]
    body = await request.read()
    status, event = console.receiver.receive(
        request.headers.get("Vigil-Signature"), body)
    if event is not None:
        incident = event["incident"]
        new_alarm = event["event"] == "raised" and incident["kind"] in ALARM_KINDS
        console.hub.publish("alarm" if new_alarm else "incident", incident["id"])
    return web.Response(status=status)


async def _healthz(request):
    return web.Response(text="ok\n")


async def _metrics(request):
    console = request.app[STATE]
    lines = ["# HELP vigil_responder_webhooks_total Webhook requests by result",
             "# TYPE vigil_responder_webhooks_total counter"]
    lines += ['vigil_responder_webhooks_total{result="%s"} %d' % (result, count)
              for result, count in console.receiver.counts.items()]
    lines += ["# HELP vigil_responder_live_clients Browsers on the live stream",
              "# TYPE vigil_responder_live_clients gauge",
              "vigil_responder_live_clients %d" % console.hub.clients]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


# --- signing in ------------------------------------------------------------------------------

async def _login_page(request):
    return _render(request, "login.html", error=None)


async def _login(request):
    console = request.app[STATE]
    form = await request.post()
    name = (form.get("name") or "").strip()
    token = console.sessions.login(name, form.get("password") or "")
    if token is None:
        log.warning("login refused for an unknown name or a wrong password")
        return _render(request, "login.html", status=401, error="Wrong name or password.")
    log.info("login responder=%s", name)
    response = web.HTTPSeeOther("/")
    response.set_cookie(auth.COOKIE, token, httponly=True, samesite="Strict",
                        secure=console.secure_cookie, max_age=auth.SESSION_S, path="/")
    raise response


async def _logout(request):
    console = request.app[STATE]
    console.sessions.logout(request.cookies.get(auth.COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(auth.COOKIE, path="/")
    raise response


# --- the queue and the incident --------------------------------------------------------------

def _queue(console):
    alarms, faults = [], []
    for row in console.store.incidents(open_only=True):
        view = views.incident_view(row, console.store.steps(row["id"]))
        (faults if view["lane"] == procedures.FAULT else alarms).append(view)
    newest = lambda v: -(v["raised_at"] or 0)  # noqa: E731
    return sorted(alarms, key=newest), sorted(faults, key=newest)


async def _queue_page(request):
    alarms, faults = _queue(request.app[STATE])
    return _render(request, "queue.html", alarms=alarms, faults=faults)


async def _queue_fragment(request):
    alarms, faults = _queue(request.app[STATE])
    return _render(request, "_queue.html", alarms=alarms, faults=faults)


def _incident(request):
    console = request.app[STATE]
    incident_id = int(request.match_info["id"])
    row = console.store.incident(incident_id)
    if row is None:
        raise web.HTTPNotFound(text="no incident %d\n" % incident_id)
    return views.incident_view(row, console.store.steps(incident_id))


async def _incident_page(request):
    return _render(request, "incident.html", i=_incident(request), error=None)


async def _incident_panel(request):
    return _render(request, "_panel.html", i=_incident(request), error=None)


async def _events(request):
    return await request.app[STATE].hub.stream(request)


async def _take(request):
    console = request.app[STATE]
    view = _incident(request)
    name = request["responder"]
    if view["holder"] and view["holder"] != name and request["form"].get("takeover") != "1":
        return _render(request, "incident.html", status=409, i=view,
                       error="%s has this incident: take it over explicitly" % view["holder"])
    if view["holder"] != name:
        detail = "took it over from %s" % view["holder"] if view["holder"] else "took it"
        console.store.set_holder(view["id"], name)
        console.store.add_step(view["id"], "take", name, "done", detail)
        log.info("incident=%d taken by responder=%s", view["id"], name)
        console.hub.publish("incident", view["id"])
    raise web.HTTPSeeOther("/incidents/%d" % view["id"])


async def _step(request):
    console = request.app[STATE]
    name = request["responder"]
    form = request["form"]
    async with console.lock(int(request.match_info["id"])):
        view = _incident(request)
        refused = _may_act(view, name)
        done = {s["name"] for s in view["checklist"] if s["done"]}
        try:
            if refused:
                raise procedures.StepRefused(refused)
            step = procedures.check(view["kind"], done, request.match_info["step"],
                                    form.get("reason"), form.get("text"))
        except procedures.StepRefused as exc:
            return _render(request, "incident.html", status=409, i=view, error=str(exc))
        detail = step.label
        if step.name == "resolve":
            detail = "resolved: " + procedures.resolution(form.get("reason"), form.get("text"))
        if view["holder"] is None:
            console.store.set_holder(view["id"], name)
            console.store.add_step(view["id"], "take", name, "done", "took it")
        if step.action is not None:
            answer = await console.gateway.act(view["id"], step.action,
                                               note="%s (by %s)" % (detail, name))
            if not answer.ok:
                console.store.add_step(view["id"], step.name, name, "refused",
                                       "the gateway did not take %s: %s" % (step.action,
                                                                           answer.message))
                log.warning("incident=%d step=%s refused by the gateway: %s", view["id"],
                            step.name, answer.body.get("error", answer.status))
                console.hub.publish("incident", view["id"])
                return _render(request, "incident.html", status=409,
                               i=_incident(request),
                               error="Not done: the gateway did not take it (%s)"
                               % answer.message)
            if answer.body.get("downlink") is not None:
                detail += "; the gateway queued downlink %d" % answer.body["downlink"]
        at = console.store.add_step(view["id"], step.name, name, "done", detail)
        if step.name == "resolve":
            console.store.set_resolved(view["id"], at, detail)
        log.info("incident=%d step=%s by responder=%s", view["id"], step.name, name)
    console.hub.publish("incident", view["id"])
    raise web.HTTPSeeOther("/incidents/%d" % view["id"])


def _may_act(view, name):
    if not view["open"]:
        return "this incident is closed"
    if view["holder"] and view["holder"] != name:
        return "%s has this incident: take it over first" % view["holder"]
    return None


async def _figures(request):
    console = request.app[STATE]
    month = request.query.get("month") or figures.month_of(time.time())
    try:
        first = time.strptime(month + "-01", "%Y-%m-%d")
    except ValueError:
        raise web.HTTPBadRequest(text="month is YYYY-MM\n")
    views_ = [views.incident_view(row, console.store.steps(row["id"]))
              for row in console.store.incidents(open_only=False)]
    chosen = sorted((v for v in views_ if figures.month_of(v["raised_at"]) == month),
                    key=lambda v: v["raised_at"])
    rows = figures.summary(chosen, month)
    medians = [(r["kind"], r["to_first_step"]["median"]) for r in rows
               if r["kind"] != "all" and r["to_first_step"]]
    top = max([m for _, m in medians] or [1]) or 1
    bars = [{"kind": k, "width": int(400 * m / top), "label": figures.duration(m)}
            for k, m in medians]
    year, mon = first.tm_year, first.tm_mon
    previous = "%04d-%02d" % ((year, mon - 1) if mon > 1 else (year - 1, 12))
    following = "%04d-%02d" % ((year, mon + 1) if mon < 12 else (year + 1, 1))
    return _render(request, "figures.html", month=month, rows=rows, bars=bars,
                   intervals=figures.INTERVALS, previous=previous,
                   next=following if following <= figures.month_of(time.time()) else None,
                   incidents=[(v, figures.incident_times(v)) for v in chosen])
