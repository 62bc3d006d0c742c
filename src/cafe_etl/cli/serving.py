"""The ``serve`` command: the dashboard, its JSON API, /metrics, /healthz and /readyz."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from cafe_etl.cli.common import err, handle_errors, key_options, main, out, s3_option, settings, warehouse_option
from cafe_etl.config import ENV_AUTH_TOKEN, ENV_AUTH_TOKEN_FILE
from cafe_etl.errors import ConfigError


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --auth-token (or --no-auth)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--watch", "watch_sources", multiple=True, metavar="SOURCE",
              help="Also ingest files landing in SOURCE (folder, glob or s3:// prefix); repeatable")
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=30.0, show_default=True,
              help="Seconds between polls of --watch sources")
@click.option("--auth-token-file", envvar=ENV_AUTH_TOKEN_FILE, default=None, metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A file holding the token every page and API call must carry [env CAFE_ETL_AUTH_TOKEN_FILE]")
@click.option("--auth-token", envvar=ENV_AUTH_TOKEN, default=None, metavar="TOKEN",
              help="The token itself [env CAFE_ETL_AUTH_TOKEN]; on the command line it shows in `ps`")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback address without a token (not recommended)")
@click.option("--allowed-host", "allowed_host", multiple=True, metavar="NAME",
              help="A host name the service answers to (repeatable) [loopback names on loopback; else any]")
@click.option("--query-timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds any one dashboard query may run")
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request")
@warehouse_option
@key_options
@s3_option
@handle_errors
def serve(host, port, watch_sources, interval, auth_token_file, auth_token, no_auth, allowed_host, query_timeout,
          access_log, warehouse, key_file, customer_keys, s3_endpoint_url) -> None:
    """Serve the dashboard, its JSON API (/docs), /metrics, /healthz and /readyz."""
    from cafe_etl.cli.loading import check_sources

    chosen = settings(warehouse, key_file, customer_keys, s3_endpoint_url)
    if watch_sources:
        check_sources(watch_sources)
    if auth_token_file is not None:
        auth_token = _read_token(auth_token_file)
    elif auth_token and click.get_current_context().get_parameter_source("auth_token") == ParameterSource.COMMANDLINE:
        err.print("warning: a token on the command line shows in `ps` to every user of this machine; "
                  "use --auth-token-file or CAFE_ETL_AUTH_TOKEN")
    serve_dashboard(chosen, host, port, auth_token, no_auth, watch_sources=watch_sources, interval=interval,
                    query_timeout=query_timeout, access_log=access_log, names=allowed_host)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"the token file {path} is empty")
    return token


def serve_dashboard(chosen, host, port, auth_token, no_auth, *, watch_sources=(), interval=30.0,
                    query_timeout=10.0, access_log=False, names=()) -> None:
    import socket

    from cafe_etl.web import server
    from cafe_etl.web.app import ServeOptions, create_app
    from cafe_etl.web.gateway import Limits
    from cafe_etl.web.security import allowed_hosts, required_token

    token = required_token(host, auth_token, no_auth)
    try:  # a clear message now rather than a log line from inside the server
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    app = create_app(chosen, ServeOptions(token=token, watch=tuple(watch_sources), watch_interval=interval,
                                          limits=Limits(time_limit=query_timeout),
                                          allowed_hosts=allowed_hosts(host, tuple(names))))
    shown = f"[{host}]" if ":" in host else host
    out.print(f"dashboard: http://{shown}:{port}/  ·  API: http://{shown}:{port}/docs  ·  "
              f"metrics: http://{shown}:{port}/metrics  (Ctrl-C to stop)")
    if token:
        out.print("an access token is required: open the dashboard once with ?token=<token>")
    server.run(app, host, port, access_log=access_log)
