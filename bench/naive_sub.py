#!/usr/bin/python3
"""naive_sub.py - the "what a user would write" baseline of the ingest benchmark.

A python3-paho-mqtt subscriber that takes each message (the same readings as JSON, one object
per reading, as a typical agent sends them) and inserts its readings into SQLite, one row per
reading with a unique index, committing each message: no signatures, no dedupe beyond the unique
index, no acknowledgements. SQLite is used as Python's sqlite3 module opens it (rollback journal,
synchronous=FULL: as durable as the bridge); --wal switches to WAL.

Usage: naive_sub.py --pki DIR --port INTERNAL_PORT --db PATH --expect N [--ready FILE]
                    [--timeout S] [--wal]
Prints one key=value line: messages/s and readings/s from the first message to the last commit.
"""
import argparse
import json
import os
import sqlite3
import ssl
import sys
import time

import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pki", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--ready")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--wal", action="store_true")
    a = ap.parse_args()

    db = sqlite3.connect(a.db)
    if a.wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS readings (device TEXT NOT NULL, metric TEXT NOT NULL,"
               " ts INTEGER NOT NULL, value REAL, UNIQUE (device, metric, ts))")
    db.commit()

    st = {"msgs": 0, "readings": 0, "first": None, "last": None, "subscribed": False}

    def on_connect(c, userdata, flags, rc, props=None):
        c.subscribe("outpost/v1/+/telemetry", qos=1)

    def on_subscribe(c, userdata, mid, granted, props=None):
        st["subscribed"] = True

    def on_message(c, userdata, msg):
        if st["first"] is None:
            st["first"] = time.monotonic()
        rows = [(r["device_id"], r["metric"], r["timestamp"], r["value"])
                for r in json.loads(msg.payload)]
        db.executemany("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?)", rows)
        db.commit()
        st["msgs"] += 1
        st["readings"] += len(rows)
        st["last"] = time.monotonic()

    c = mqtt.Client(client_id="bench-naive", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=os.path.join(a.pki, "ca.crt"),
              certfile=os.path.join(a.pki, "operator.crt"),
              keyfile=os.path.join(a.pki, "operator.key"), tls_version=ssl.PROTOCOL_TLSv1_2)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", a.port, keepalive=60)
    end = time.monotonic() + a.timeout
    announced = False
    rc = mqtt.MQTT_ERR_SUCCESS
    while st["msgs"] < a.expect and time.monotonic() < end:
        rc = c.loop(timeout=0.1)
        if rc != mqtt.MQTT_ERR_SUCCESS:  # the broker went away: stop, do not spin
            print("naive_sub.py: connection lost: %s" % mqtt.error_string(rc), file=sys.stderr)
            break
        if st["subscribed"] and not announced and a.ready:
            open(a.ready, "w").close()
            announced = True
        if st["last"] is not None and time.monotonic() - st["last"] > 5:
            break
    if rc == mqtt.MQTT_ERR_SUCCESS:
        c.disconnect()
    secs = (st["last"] - st["first"]) if st["msgs"] > 1 else 0
    n = st["msgs"]
    print("naive ok=%d msgs=%d readings=%d secs=%.3f msg_s=%.0f rd_s=%.0f" % (
        1 if n >= a.expect else 0, n, st["readings"], secs,
        (n - 1) / secs if secs > 0 else 0,
        st["readings"] * (n - 1) / n / secs if secs > 0 else 0))
    return 0 if n >= a.expect else 1


if __name__ == "__main__":
    sys.exit(main())
