"""``python -m dml.tracking sync``: send every record still waiting in ``.dml/outbox/`` to MLflow
(the store of params.yaml's ``tracking`` section, or ``MLFLOW_TRACKING_URI``)."""

from __future__ import annotations

import argparse
import sys

from dml.config import load_params
from dml.errors import ConfigError, TrackingError
from dml.paths import PARAMS
from dml.tracking.outbox import all_outboxes, outbox_root
from dml.tracking.store import tracking_uri
from dml.tracking.sync import sync_all


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m dml.tracking", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sync", "status"])
    args = parser.parse_args()
    try:
        uri = tracking_uri(load_params(PARAMS).tracking)
        root = outbox_root()
        pending = [o.key for o in all_outboxes(root) if o.pending()]
        if args.command == "status":
            print(f"{len(pending)} run(s) with records waiting for {uri}" + "".join(f"\n  {k}" for k in pending))
            kept = sorted(root.glob("*.quarantine")) if root.is_dir() else []
            if kept:
                print(f"damaged records kept aside (not synced): {', '.join(str(p) for p in kept)}")
            return
        done = sync_all(uri, root)
    except (ConfigError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"synced {len(done)} run(s) to {uri}; {sum(o.pending() for o in all_outboxes(root))} still waiting")


if __name__ == "__main__":
    main()
