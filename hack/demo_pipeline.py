#!/usr/bin/env python3
"""The demo's simulated pipeline, on the BigQuery emulator (standard library only).

  demo_pipeline.py setup DATE        datasets and tables; every Phase 4 table but
                                     player_daily_cache filled for DATE; the schedule
                                     has games on DATE; the healing events table
  demo_pipeline.py serve PORT        Phase 4's process-date endpoint: a POST fills the
                                     processor's table for the date, as the real one would
"""
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HOST = os.environ["BIGQUERY_EMULATOR_HOST"]
PROJECT = os.environ["GOOGLE_CLOUD_PROJECT"]
BASE = f"http://{HOST}/bigquery/v2/projects/{PROJECT}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# processor -> (dataset, table, date column)
PHASE4 = {
    "TeamDefenseZoneAnalysis": ("nba_precompute", "team_defense_zone_analysis", "analysis_date"),
    "PlayerShotZoneAnalysis": ("nba_precompute", "player_shot_zone_analysis", "analysis_date"),
    "PlayerDailyCache": ("nba_predictions", "player_daily_cache", "game_date"),
    "PlayerCompositeFactors": ("nba_precompute", "player_composite_factors", "analysis_date"),
    "MLFeatureStore": ("nba_predictions", "ml_feature_store_v2", "game_date"),
}
SCHEDULE = ("nba_raw", "nbac_schedule", "game_date_est")


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def table(dataset, name, fields):
    call("POST", f"/datasets/{dataset}/tables", {
        "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": name},
        "schema": {"fields": fields},
    })


def fill(dataset, name, column, date, rows):
    call("POST", f"/datasets/{dataset}/tables/{name}/insertAll", {
        "rows": [{"json": {column: date, "player_lookup": f"player{i}"}} for i in range(rows)],
    })


def setup(date):
    for dataset in ["nba_raw", "nba_precompute", "nba_predictions", "nba_orchestration"]:
        call("POST", "/datasets", {"datasetReference": {"projectId": PROJECT, "datasetId": dataset}})
    for dataset, name, column in [SCHEDULE, *PHASE4.values()]:
        table(dataset, name, [{"name": column, "type": "DATE"}, {"name": "player_lookup", "type": "STRING"}])
    fill(*SCHEDULE, date, 9)
    for processor, (dataset, name, column) in PHASE4.items():
        if processor != "PlayerDailyCache":
            fill(dataset, name, column, date, 40)
    for name in ["healing_events", "batch_outcomes"]:
        with open(os.path.join(ROOT, "schemas", f"{name}.json")) as f:
            table("nba_orchestration", name, json.load(f))


class Processors(BaseHTTPRequestHandler):
    def do_POST(self):
        query = parse_qs(urlparse(self.path).query)
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        processor = (query.get("processor") or [body.get("processor")])[0]
        date = (query.get("date") or [body.get("date")])[0]
        if processor not in PHASE4:
            self.send_response(404)
            self.end_headers()
            return
        fill(*PHASE4[processor], date, 40)
        print(f"[processor] {processor} ran for {date} "
              f"(correlation {self.headers.get('X-Correlation-Id')})", file=sys.stderr, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2])
    elif sys.argv[1] == "serve":
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Processors).serve_forever()
    else:
        sys.exit(__doc__)
