"""Container health check of a dsgw gateway: exit 0 when ``GET /readyz`` answers 200.

Standard library only (the slim image has no curl). The port is ``DSGW_PORT`` (8080 by
default); the check goes to the loopback address, which ``dsgw serve --host 0.0.0.0``
includes. Any other status, a refused connection or a timeout is unhealthy (exit 1), with
one line saying why in the health log (``docker inspect``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("DSGW_PORT", "8080")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
