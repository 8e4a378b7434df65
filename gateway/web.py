"""The investigators' page at ``/``.

The page is a static shell (Jinja, autoescaped) and a script that reads the JSON API. All
data reaches the DOM through ``textContent``, never as markup, and a strict Content Security
Policy (no inline script, nothing from other origins) backs that up.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from gateway.runtime import GatewayRuntime

PAGE_CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])


def build_web(rt: GatewayRuntime) -> Blueprint:
    web = Blueprint("web", __name__)
    settings = rt.settings

    @web.get("/")
    def index() -> Response:
        html = render_template(
            "index.html",
            refresh_ms=int(settings.page_refresh_s * 1000),
            submit_needs_key=settings.api_key is not None,
            read_needs_key=settings.read_api_key is not None or settings.api_key is not None,
            max_batch=settings.max_batch,
        )
        response = Response(html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    return web
