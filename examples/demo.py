"""Start an observed worker, send it a mix of tasks and show what it reports.

    python examples/demo.py          # keeps the worker running until Ctrl-C
    python examples/demo.py --once   # prints the results and stops the worker

Needs no broker server: the demo app uses kombu's filesystem transport.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.demoapp import DEMO_DIR, app  # noqa: E402


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if fetch(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the worker did not answer {url} within {seconds:.0f} s; "
                     f"see {DEMO_DIR / 'worker.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="stop the worker after the report")
    parser.add_argument("--port", type=int, default=9540, help="the worker's HTTP port")
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"

    log_path = DEMO_DIR / "worker.log"
    print(f"Starting an observed worker (its log: {log_path})...")
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "examples.demoapp", "worker", "--observe",
             "--observe-port", str(args.port), "-c", "2", "-l", "info"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(base + "/readyz", 30)
        print("\nSending 20 tasks: successes, failures, a retry and a rejected message...")
        tasks = app.tasks
        for n in range(12):
            tasks["examples.demoapp.resize_image"].delay(640 + n, 480)
        for amount in (10, -5, 20, -1):
            tasks["examples.demoapp.charge_card"].delay(amount)
        tasks["examples.demoapp.call_flaky_api"].delay()
        tasks["examples.demoapp.import_row"].delay({"name": "no id"})
        tasks["examples.demoapp.import_row"].delay({"id": "7"})
        tasks["examples.demoapp.import_row"].delay({"id": "8"})

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = json.loads(fetch(base + "/status")[1])["counts"]
            if sum(counts.values()) >= 21:  # 20 tasks plus the retry's second run
                break
            time.sleep(0.2)
        print("\nOutcomes counted by the worker (/status):", json.dumps(counts))
        print("\nFrom /metrics:")
        for line in fetch(base + "/metrics")[1].splitlines():
            if line.startswith(("celery_task_total", "celery_task_errors_total",
                                "celery_task_retries_total")) and not line.endswith(" 0.0"):
                print("  " + line)
        print(f"\nLook for yourself:\n  curl {base}/metrics\n  curl {base}/healthz\n"
              f"  curl {base}/readyz\n  curl {base}/status")
        if not args.once:
            print("\nThe worker keeps running; press Ctrl-C to stop it.")
            worker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)


if __name__ == "__main__":
    main()
