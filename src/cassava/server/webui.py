"""The diagnosis page at `/` of the REST port: static files, served with a strict Content-Security-Policy.

The page (static/index.html, app.js, app.css) calls the public V2 API only, with relative URLs, so it
proves the API, trusts nothing new, and works behind an ingress path prefix. The runtime exposes it as
MLServer custom handlers (`cassava.server.runtime.CassavaRuntime.web_page` / `web_asset`): those are
registered by `mlserver start model/` as much as by our launcher, and with parallel workers MLServer
runs them in a worker (mlserver/parallel/model.py, 1.7.1), so the responses here are plain picklable
values built from bytes read once per process.

Names the page needs (model, input and output names, the six classes with their descriptions) are
rendered into index.html from `cassava.contract` and `cassava.labels`; app.js writes down none of them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from mlserver.handlers import custom_handler
from starlette.responses import Response

from cassava import contract
from cassava.labels import CODES, LABELS
from cassava.settings import CassavaSettings

#: Under this top probability a result reads "uncertain — take another photo", not a diagnosis: below
#: one half the model rates its own best class as more likely wrong than right.
UNCERTAIN_BELOW = 0.5
UNCERTAIN_TEXT = "Uncertain — take another photo"
#: `unknown`, the class the model adds after the dataset's five (`cassava.labels`)
UNKNOWN_CODE = CODES[-1]
#: Photos whose longest side exceeds this are redrawn at it in the browser (JPEG) before upload. Twice
#: the model's 224-px input, so the server's bilinear resize (half-pixel centres, no antialiasing)
#: still blends neighbouring pixels rather than skipping most of them; a 12 MP photo's request shrinks
#: ~200x (README, "Try it in a browser").
UPLOAD_MAX_SIDE = 448
UPLOAD_JPEG_QUALITY = 0.9
#: Requests the page keeps in flight; the others queue (the page accepts any number of photos).
CONCURRENT_UPLOADS = 2

PAGE_PATH = "/"
ASSET_PREFIX = "/ui/"
_CONFIG_MARKER = "__CASSAVA_CONFIG__"
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

#: Only this server's own scripts, styles and API; previews are blob: URLs of the user's own photos.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    # Revalidate on every load: after an upgrade the page and its script must not come from two versions.
    "Cache-Control": "no-cache",
}


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Response]])


def get(rest_path: str) -> Callable[[_Handler], _Handler]:
    """MLServer's `custom_handler` for a GET route, typed. A handler takes no request object: with
    parallel workers MLServer pickles its arguments to a worker (mlserver/parallel/model.py, 1.7.1)."""
    decorate: Callable[[_Handler], _Handler] = custom_handler(rest_path=rest_path, rest_method="GET")
    return decorate


def page_config() -> dict[str, Any]:
    """What app.js reads from the page: every name and threshold, from its one owner."""
    input_datatype = {name: datatype for name, datatype, _ in contract.INPUT_SPECS}[contract.IMAGES_INPUT]
    return {
        "model": contract.MODEL_NAME,
        "input": contract.IMAGES_INPUT,
        "datatype": input_datatype,
        "outputs": {"code": contract.OUTPUT_CODE, "probabilities": contract.OUTPUT_PROBABILITIES},
        "labels": [
            {"code": label.code, "name": label.name, "description": label.description} for label in LABELS
        ],
        "unknownCode": UNKNOWN_CODE,
        "uncertainBelow": UNCERTAIN_BELOW,
        "uncertainText": UNCERTAIN_TEXT,
        "maxSide": UPLOAD_MAX_SIDE,
        "jpegQuality": UPLOAD_JPEG_QUALITY,
        "concurrentUploads": CONCURRENT_UPLOADS,
    }


def static_file(name: str) -> bytes:
    return (resources.files("cassava.server") / "static" / name).read_bytes()


@cache
def page_html() -> bytes:
    # JSON inside <script type="application/json"> (a data block CSP does not execute): "<" escaped so
    # no text can close the element early.
    config = json.dumps(page_config(), ensure_ascii=False).replace("<", "\\u003c")
    html = static_file("index.html").decode("utf-8")
    if html.count(_CONFIG_MARKER) != 1:
        raise RuntimeError(f"static/index.html must hold {_CONFIG_MARKER} exactly once")
    return html.replace(_CONFIG_MARKER, config).encode("utf-8")


@cache
def _asset(name: str) -> bytes:
    return static_file(name)


def _disabled() -> Response:
    return Response(
        "the web page is turned off on this server (CASSAVA_WEB_UI=false); the API is at /v2/models/"
        f"{contract.MODEL_NAME}",
        status_code=404,
        media_type="text/plain; charset=utf-8",
        headers=SECURITY_HEADERS,
    )


def page(options: CassavaSettings) -> Response:
    if not options.web_ui:
        return _disabled()
    return Response(page_html(), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


def asset(name: str, options: CassavaSettings) -> Response:
    if not options.web_ui:
        return _disabled()
    if name not in _ASSETS:
        return Response(
            f"no such file {name!r}; the page's files are {', '.join(sorted(_ASSETS))}",
            status_code=404,
            media_type="text/plain; charset=utf-8",
            headers=SECURITY_HEADERS,
        )
    return Response(_asset(name), media_type=_ASSETS[name], headers=SECURITY_HEADERS)
