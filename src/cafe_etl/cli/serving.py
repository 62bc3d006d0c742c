"""The ``serve`` command: the dashboard, its JSON API, /metrics, /healthz and /readyz."""

from __future__ import annotations

import click

from cafe_etl.cli.common import handle_errors, key_options, main, out, s3_option, settings, warehouse_option
from cafe_etl.config import ENV_AUTH_TOKEN


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --auth-token (or --no-auth)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--watch", "watch_sources", multiple=True, metavar="SOURCE",
              help="Also ingest files landing in SOURCE (folder, glob or s3:// prefix); repeatable")
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=30.0, show_default=True,
              help="Seconds between polls of --watch sources")
@click.option("--auth-token", envvar=ENV_AUTH_TOKEN, default=None, metavar="TOKEN",
              help="Token every page and API call must carry [env CAFE_ETL_AUTH_TOKEN]")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback address without a token (not recommended)")
@click.option("--query-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds any one dashboard query may run")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request")
@warehouse_option
@key_options
@s3_option
@handle_errors
def serve(host, port, watch_sources, interval, auth_token, no_auth, query_timeout, access_log, warehouse, key_file,
          customer_keys, s3_endpoint_url) -> None:
    """Serve the dashboard, its JSON API (/docs), /metrics, /healthz and /readyz."""
    from cafe_etl.cli.loading import check_sources

    chosen = settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    if watch_sources:
        check_sources(watch_sources)
    serve_dashboard(chosen, host, port, auth_token, no_auth, watch_sources=watch_sources, interval=interval,
                    query_timeout=query_timeout, access_log=access_log)


def serve_dashboard(chosen, host, port, auth_token, no_auth, *, watch_sources=(), interval=30.0,
                    query_timeout=10.0, access_log=False) -> None:
    import socket

    from cafe_etl.web import server
    from cafe_etl.web.app import ServeOptions, create_app
    from cafe_etl.web.gateway import Limits
    from cafe_etl.web.security import required_token

    token = required_token(host, auth_token, no_auth)
    try:  # a clear message now rather than a log line from inside the server
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    app = create_app(chosen, ServeOptions(token=token, watch=tuple(watch_sources), watch_interval=interval,
                                          limits=Limits(time_limit=query_timeout)))
    shown = f"[{host}]" if ":" in host else host
    out.print(f"dashboard: http://{shown}:{port}/  ·  API: http://{shown}:{port}/docs  ·  "
              f"metrics: http://{shown}:{port}/metrics  (Ctrl-C to stop)")
    if token:
        out.print("an access token is required: open the dashboard once with ?token=<token>")
    server.run(app, host, port, access_log=access_log)
