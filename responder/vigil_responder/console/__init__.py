"""The responder console: Vigil's signed webhook in, a live queue and the procedure for each
kind in the browser, the responder's actions out through the gateway's actions API.

    vigil responder run --config responder.toml
    vigil responder user add NAME --config responder.toml

Modules, one job each: config (the TOML file), store (SQLite: incidents, events, steps,
accounts, sessions), receiver (the webhook's rules), procedures (the checklist per kind, as
data), gateway (the actions API client), live (server-sent events), auth (passwords, sessions,
CSRF), views and figures (what a page shows; the handling times), web (the aiohttp
application), cli and demo (the commands), client (a responder without a browser: the
requests the pages make, for `vigil demo`).
"""
