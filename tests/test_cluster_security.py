"""Security of the scale-out pieces, on loopback: the project's MLflow server is not exposed
without MLflow's basic-auth app and refuses an unauthenticated request; a TLS Dask scheduler
refuses a client without a certificate its CA signed (distributed's own TLS)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ddp_worker import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_the_tracking_server_is_not_exposed_without_auth(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.tracking_server", "--host", "0.0.0.0", "--root", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "--host 0.0.0.0 exposes the tracking store beyond this machine: add --auth (MLflow's basic-auth app; "
        "set MLFLOW_AUTH_ADMIN_PASSWORD)"]


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_an_unauthenticated_request_to_the_auth_server_is_refused(tmp_path):
    """Reference: HTTP 401 from MLflow's basic-auth app without credentials, 200 with the admin's."""
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": "s3cret-for-the-test"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.tracking_server", "--auth", "--port", str(port), "--root", str(tmp_path)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except (urllib.error.HTTPError, OSError) as err:
                if isinstance(err, urllib.error.HTTPError):
                    break  # answering
                time.sleep(0.5)
        assert _get(api) == 401
        assert _get(api, ("admin", "wrong")) == 401
        assert _get(api, ("admin", "s3cret-for-the-test")) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_tls_scheduler_refuses_a_client_without_the_certificate(tmp_path):
    """Reference: distributed's TLS: a client with the CA and a certificate it signed connects;
    one with the CA but no certificate, and one without TLS, do not."""
    from distributed import Client, Security

    made = Security.temporary()  # a throwaway CA-signed certificate and key (PEM text)
    files = {}
    for name in ("tls_ca_file", "tls_scheduler_cert", "tls_scheduler_key", "tls_client_cert", "tls_client_key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(getattr(made, name))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                             "--port", str(port), "--no-dashboard", "--tls-ca-file", str(files["tls_ca_file"]),
                             "--tls-cert", str(files["tls_scheduler_cert"]), "--tls-key", str(files["tls_scheduler_key"])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"tls://127.0.0.1:{port}"
    try:
        good = Security(tls_ca_file=str(files["tls_ca_file"]), tls_client_cert=str(files["tls_client_cert"]),
                        tls_client_key=str(files["tls_client_key"]), require_encryption=True)
        with Client(address, security=good, timeout=60) as client:
            assert client.scheduler_info()["address"] == address
        no_cert = Security(tls_ca_file=str(files["tls_ca_file"]), require_encryption=True)
        for security in (no_cert, None):
            with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
                Client(address.replace("tls://", "tcp://") if security is None else address, security=security, timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
