"""Running the app: uvicorn, with a stop that a service manager expects."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


class GracefulServer(uvicorn.Server):
    """SIGINT/SIGTERM shut down gracefully (the requests in hand, then the watcher's
    batch) and the process exits 0. uvicorn itself re-raises the signal after
    shutting down, which a service manager would report as a failure."""

    @contextmanager
    def capture_signals(self):
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def run(app: FastAPI, host: str, port: int, *, access_log: bool = False) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=access_log,
                            server_header=False)
    if access_log:  # uvicorn's access lines are INFO: the "warning" level above would drop them
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    GracefulServer(config).run()
