"""Client mistakes are logged by MLServer as one INFO line each, not as an ERROR with a traceback.

MLServer 1.7.1 logs every exception a parallel worker's `predict` raises (`mlserver.parallel`) and
every error a gRPC call ends with (`mlserver.grpc`) through `logger.exception`, so each rejected
request costs ~10 lines at ERROR. A flood of bad requests then floods the log and buries real faults.
This filter rewrites only records whose exception carries an HTTP 4xx status (MLServer's own
`MLServerError.status_code`, which `cassava.runtime.InvalidRequestError` sets to 400): one line, INFO,
the message kept (cassava's messages describe a request, never copy it; see `errors.safe_reason`).
Server faults (5xx, anything else) keep their level and traceback.
"""

from __future__ import annotations

import logging

#: MLServer's loggers that log client errors with `logger.exception`
LOGGERS = ("mlserver.parallel", "mlserver.grpc")


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.msg = "rejected a request (status %d): %s"
            record.args = (status, str(exc))
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
        return True


def install() -> None:
    """Attach the filter once per process (the server process and every parallel worker)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
            logger.addFilter(ClientErrorFilter())
