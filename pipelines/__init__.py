"""Prefect flows over the DVC pipeline (``dvc_flow``: one pipeline run; ``sweep``: a study of
many DVC experiments).

Offline by default, set here so that it happens before any flow module imports Prefect: no
analytics, and an ephemeral local Prefect API when no server is configured.
"""

import os

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
