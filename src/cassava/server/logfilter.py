"""One log line per rejected request, and no request content in the access log.

MLServer 1.7.1 logs every exception a parallel worker's `predict` raises (`mlserver.parallel`) and
every error a gRPC call ends with (`mlserver.grpc`) through `logger.exception`, so each rejected
request cost ~10 lines at ERROR, and a flood of bad requests buried real faults. `ClientErrorFilter`
handles records whose exception carries an HTTP 4xx status (MLServer's own `MLServerError.status_code`,
which `cassava.server.protocol.InvalidRequestError` sets to 400):

- in the worker (`mlserver.parallel`) it drops them: the server process logs the same request once
  already (REST: uvicorn's access line with the status; gRPC: the `mlserver.grpc` line below), and two
  lines per rejection doubled what a flood writes;
- in the server process (`mlserver.grpc`) it makes them one INFO line, the message kept (cassava's
  messages describe a request, never copy it; see `errors.safe_reason`).

Server faults (5xx, anything else) keep their level and traceback.

`AccessLogFilter` (uvicorn's access log, which MLServer turns on with its default `debug: true`) logs the
path without its query string, cut to `MAX_LOGGED_PATH` characters with non-printable characters
escaped: the query string is the client's content (it may hold a token), and a path can be megabytes.
"""

from __future__ import annotations

import logging

#: MLServer's loggers that log client errors with `logger.exception`
LOGGERS = ("mlserver.parallel", "mlserver.grpc")
#: loggers whose client-error records are dropped, not shortened (see the module docstring)
DROPPED = frozenset({"mlserver.parallel"})
#: the longest request path the access log writes
MAX_LOGGED_PATH = 120


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            if record.name in DROPPED:
                return False
            record.msg = "rejected a request (status %d): %s"
            record.args = (status, str(exc))
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
        return True


def sanitise_path(path: str) -> str:
    """A request target as the access log may show it: no query string, printable, bounded."""
    path = path.split("?", 1)[0]
    shown = path.encode("ascii", "backslashreplace").decode("ascii")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return shown if len(shown) <= MAX_LOGGED_PATH else shown[:MAX_LOGGED_PATH] + "..."


class AccessLogFilter(logging.Filter):
    """uvicorn/logging.py's access record: args = (client, method, full path with query, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            record.args = (client, method, sanitise_path(str(path)), version, status)
        return True


def install() -> None:
    """Attach the client-error filter once per process (the server process and every parallel worker)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
            logger.addFilter(ClientErrorFilter())


def install_access_log_filter() -> None:
    """Attach the access-log filter to uvicorn's access logger (the server process)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogFilter) for f in logger.filters):
        logger.addFilter(AccessLogFilter())
