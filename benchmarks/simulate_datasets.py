"""How long each simulated dataset takes to make, its peak memory and size on disk.

Run: ``.venv/bin/python benchmarks/simulate_datasets.py [test|demo|both]``

Each dataset is made in a fresh process (so peak memory is its own), in a
temporary directory that is removed afterwards. Prints a table.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("rotation", "transmission_series", "sacla", "eiger_series")


def measure(kind, size):
    """(seconds, peak RSS in MB, MB on disk, files) for one dataset."""
    with tempfile.TemporaryDirectory() as work:
        directory = Path(work) / "data"
        code = (
            "import resource, sys\n"
            "from dials_diffuse import simulate\n"
            f"getattr(simulate, 'simulate_{kind}')(sys.argv[1], size='{size}')\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", code, str(directory)],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        peak_kb = int(result.stdout.split()[-1])  # kB on Linux
        files = [p for p in directory.rglob("*") if p.is_file()]
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        return seconds, peak_kb / 1024, megabytes, len(files)


def main(argv):
    which = argv[0] if argv else "test"
    sizes = ("test", "demo") if which == "both" else (which,)
    print(
        f"{'kind':22s} {'size':5s} {'seconds':>8s} {'peak MB':>8s} {'disk MB':>8s} {'files':>6s}"
    )
    for size in sizes:
        for kind in KINDS:
            seconds, peak, disk, files = measure(kind, size)
            print(
                f"{kind:22s} {size:5s} {seconds:8.1f} {peak:8.0f} {disk:8.1f} {files:6d}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
