"""The Python SDK's export_to_csv on one study, for `trialflow bench export` to compare with.

Usage: bench_export.py BASE_URL STUDY_KEY OUTPUT_CSV
Prints one JSON object: records, seconds, sdk_records_per_s, sdk_peak_rss_mb.
"""
import csv
import json
import resource
import sys
import time

from imednet import ImednetSDK
from imednet.integrations import export


def main() -> None:
    base_url, study, output = sys.argv[1:4]
    started = time.perf_counter()
    with ImednetSDK(api_key="demo-api-key", security_key="demo-security-key", base_url=base_url) as sdk:
        export.export_to_csv(sdk, study, output)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    with open(output, encoding="utf-8", newline="") as f:
        records = sum(1 for _ in csv.reader(f)) - 1
    print(json.dumps({
        "records": records,
        "seconds": round(seconds, 2),
        "sdk_records_per_s": round(records / seconds, 1),
        "sdk_peak_rss_mb": round(peak_kb / 1024, 1),
    }))


if __name__ == "__main__":
    main()
