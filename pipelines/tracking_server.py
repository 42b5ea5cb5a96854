"""The project's shared MLflow tracking server: ``mlflow server`` over the repository's
``mlflow.db``, serving artifacts from ``mlartifacts/``, for the workers of a cluster sweep
(``MLFLOW_TRACKING_URI=http://HOST:PORT``).

It binds 127.0.0.1 unless told otherwise. Binding anything else exposes the store, so it then
needs ``--auth``: MLflow's basic-auth app (every request authenticated; the admin's password
from ``MLFLOW_AUTH_ADMIN_PASSWORD`` the first time; clients set ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``). Its user store is ``.dml/mlflow-auth.db``.

Usage: ``python -m pipelines.tracking_server [--host 127.0.0.1] [--port 5000] [--auth]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from pathlib import Path

LOOPBACK = ("localhost",)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK


def server_command(root: Path, host: str, port: int, auth: bool) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and the environment it needs; a one-line SystemExit
    for an exposed server without authentication."""
    if not is_loopback(host) and not auth:
        raise SystemExit(f"--host {host} exposes the tracking store beyond this machine: add --auth "
                         "(MLflow's basic-auth app; set MLFLOW_AUTH_ADMIN_PASSWORD)")
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "mlartifacts")]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    if auth:
        state = root / ".dml"
        state.mkdir(parents=True, exist_ok=True)
        config = state / "mlflow-auth.ini"
        config.write_text("[mlflow]\ndefault_permission = READ\n"
                          f"database_uri = sqlite:///{state / 'mlflow-auth.db'}\nadmin_username = admin\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        if not (state / "mlflow-auth.db").exists() and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
            raise SystemExit("--auth: set MLFLOW_AUTH_ADMIN_PASSWORD (the password of user admin, created on the first start)")
        command += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        # the key of the app's CSRF tokens: MLflow refuses to start without one; kept so restarts agree
        key_file = state / "mlflow-secret-key"
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or key_file.read_text())
    return command, env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tracking_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another needs --auth)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--auth", action="store_true", help="MLflow's basic-auth app: every request needs a user and password")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        command, env = server_command(root, args.host, args.port, args.auth)
    except SystemExit as err:
        print(err, file=sys.stderr)
        raise SystemExit(1) from None
    os.execvpe(command[0], command, {**os.environ, **env})


if __name__ == "__main__":
    main()
