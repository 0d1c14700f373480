#!/usr/bin/env python3
"""test_docker_entrypoints.py - the container entrypoints, run natively with the repository
layout the images mirror (/usr/share/outpost): what a container engine would run, minus the
engine.

  provision  docker/provision/entrypoint.sh: each role volume gets exactly its files (no CA key
             anywhere but the CA volume), keys 0600, a second run rewrites nothing, a revoked
             device leaves the device volume and the CRL reaches the broker and bridge volumes;
             with ca.key offline the PKI is still exported (an option that needs the key
             fails), and with ca.key and ca.crt both gone no new CA is made
  claims     docker/device/entrypoint.sh with a stand-in agent: concurrent replicas get distinct
             identities, one too many is refused (exit 2), a restarted replica (same hostname)
             gets its identity back, a new one takes a freed identity, an explicit identity
             that is held is refused; docker/device/healthcheck.sh follows the agent's life
  stack      run-broker.sh on the broker volume with the internal listener bound to a host
             name (as in compose), docker/mosquitto/healthcheck.sh, the real outpost-device
             through the entrypoint with compose's settings connecting over WSS with the device
             volume's files, outpost-bridge with compose's settings storing their data (when the
             bridge is built), then a revocation through the provision entrypoint that the
             broker enforces at once

Usage: test_docker_entrypoints.py [--source DIR] [--build DIR] [--tmp DIR] [--keep]
Exit status: 0 passed, 1 failed, 2 usage or missing build products."""

import argparse
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

FAILS = []
PROCS = []


def check(cond, msg):
    if cond:
        print("ok   " + msg)
    else:
        print("FAIL " + msg)
        FAILS.append(msg)
    return cond


def run(cmd, env, timeout=120):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def spawn(cmd, env, log):
    f = open(log, "ab")
    p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    f.close()
    PROCS.append(p)
    return p


def stop(p, timeout=10):
    """SIGTERM to the process (and its group), SIGKILL after timeout; -> exit status."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    else:
        try:  # children the stand-in left behind
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return p.returncode


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(d):
    """{relative path: (mode, bytes)} of the regular files under d."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = (stat.S_IMODE(st.st_mode), fh.read(), st.st_mtime_ns, st.st_ino)
    return out


def read(p):
    try:
        with open(p, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def compose_env(src, service):
    """A service's environment in docker/docker-compose.yml, ${VAR:-default} at its default."""
    import yaml
    with open(os.path.join(src, "docker/docker-compose.yml")) as f:
        env = yaml.safe_load(f)["services"][service].get("environment") or {}
    sub = lambda v: re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(v))
    return {k: sub(v) for k, v in env.items()}


def base_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env.pop("https_proxy", None)
    env.pop("HTTPS_PROXY", None)
    return env


def test_provision(src, tmp):
    ent = os.path.join(src, "docker/provision/entrypoint.sh")
    env = base_env()
    env.update(OUTPOST_PKI_DIR=tmp + "/pki", OUTPOST_EXPORT_DIR=tmp + "/export", OUTPOST_DEVICES="3")
    rc, out = run([ent], env)
    check(rc == 0, "provision: first run succeeds" + ("" if rc == 0 else ": " + out))
    exp = tmp + "/export"
    want = {
        "broker": {"ca.crt", "crl.pem", "broker.crt", "broker.key"},
        "bridge": {"ca.crt", "crl.pem", "bridge.crt", "bridge.key", "pgpass"},
        "devices": {"ca.crt", "bridge.crt"} | {"devices/device-%04d.%s" % (i, e) for i in (1, 2, 3) for e in ("crt", "key")},
        "postgres": {"password"},
    }
    for role, files in want.items():
        got = tree(os.path.join(exp, role))
        check(set(got) == files, "provision: %s volume holds exactly its %d files%s" %
              (role, len(files), "" if set(got) == files else " (got %s)" % sorted(got)))
        bad_mode, differ = [], []
        for f, (mode, data, _, _) in got.items():
            secret = f.endswith(".key") or f in ("pgpass", "password")
            if mode != (0o600 if secret else 0o644):
                bad_mode.append("%s %o" % (f, mode))
            if f.endswith(".key") or f.endswith(".crt") or f == "crl.pem":
                with open(os.path.join(tmp, "pki", f), "rb") as fh:
                    if fh.read() != data:
                        differ.append(f)
        check(not bad_mode, "provision: %s volume: keys and passwords 0600, the rest 0644%s" %
              (role, " (got %s)" % bad_mode if bad_mode else ""))
        check(not differ, "provision: %s volume: files identical to the PKI's%s" %
              (role, " (differ: %s)" % differ if differ else ""))
    everything = tree(exp)
    check(not any(os.path.basename(f) in ("ca.key", "operator.key") or "/.ca/" in f for f in everything),
          "provision: the CA key, CA database and operator key stay on the CA volume")
    check(os.path.exists(tmp + "/pki/ca.key"), "provision: the CA volume has the CA key")
    pw = read(exp + "/postgres/password").strip()
    check(len(pw) == 48 and read(exp + "/bridge/pgpass").strip() == "postgres:5432:outpost:outpost:" + pw,
          "provision: pgpass carries the generated PostgreSQL password")

    before = tree(exp)
    rc, out = run([ent], env)
    check(rc == 0 and tree(exp) == before, "provision: a second run rewrites nothing (no CRL reload, no churn)")

    bad = dict(env, OUTPOST_DEVICES="ten")
    rc, out = run([ent], bad)
    check(rc == 2 and "OUTPOST_DEVICES" in out, "provision: a bad OUTPOST_DEVICES is a usage error (2)")
    rc, out = run([ent, "--revoke", "no-such-device"], env)
    check(rc == 1, "provision: revoking an unknown device fails (provision-certs.sh's status)")
    rc, out = run([ent, "--help"], env)
    check(rc == 0 and "Usage" in out, "provision: --help")

    # the CA key taken offline (docs/DOCKER.md, "For production"): still exports, issues nothing,
    # and says when the CRL needs the key (provision-certs.sh's warning)
    os.rename(tmp + "/pki/ca.key", tmp + "/ca.key.offline")
    os.unlink(exp + "/broker/crl.pem")
    pki_before = tree(tmp + "/pki")
    rc, out = run([ent], env)
    check(rc == 0 and "ca.key is absent" in out and "crl.pem's next update is" in out and
          os.path.exists(exp + "/broker/crl.pem") and tree(tmp + "/pki") == pki_before,
          "provision: without ca.key it still exports, changes nothing in the PKI and warns of the "
          "CRL's next update" + ("" if rc == 0 else ": " + out))
    # ... also from a copy without the CA database, and (as root, in a mount namespace of its
    # own) from a read-only CA volume: nothing is written there
    nodb = tmp + "/pki-nodb"
    os.makedirs(nodb)
    for f in os.listdir(tmp + "/pki"):
        if f != ".ca":
            (shutil.copytree if os.path.isdir(tmp + "/pki/" + f) else shutil.copy2)(tmp + "/pki/" + f, nodb + "/" + f)
    exp_before = tree(exp)
    rc, out = run([ent], dict(env, OUTPOST_PKI_DIR=nodb))
    check(rc == 0 and not os.path.exists(nodb + "/.ca") and tree(exp) == exp_before,
          "provision: without ca.key, a PKI copied without .ca/ is exported, no database started: " + out)
    if os.getuid() == 0 and shutil.which("unshare"):
        rc, out = run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$1" && exec "$2"', "-",
                       tmp + "/pki", ent], env)
        check(rc == 0 and "exporting" not in out and tree(tmp + "/pki") == pki_before,
              "provision: without ca.key, a read-only CA volume is exported: " + out)
    # more devices than the PKI has: provision-certs.sh cannot issue them (3); the existing
    # ones are exported all the same
    rc, out = run([ent], dict(env, OUTPOST_DEVICES="4"))
    check(rc == 0 and "device device-0004" in out and "exporting the existing PKI" in out and
          not os.path.exists(tmp + "/pki/devices/device-0004.key") and
          len(tree(exp + "/devices/devices")) == 6,
          "provision: without ca.key, a device it cannot issue is named and the rest exported: "
          + out)
    exported = tree(exp)
    # exports take turns on provision-certs.sh's lock (an `up` beside a `run --rm provision`)
    holder = subprocess.Popen(["flock", tmp + "/pki/.ca/lock", "sleep", "5"])
    time.sleep(0.5)
    rc, out = run([ent], dict(env, OUTPOST_PKI_LOCK_WAIT="1"))
    holder.kill()
    holder.wait()
    check(rc == 1 and "still holds" in out and tree(exp) == exported,
          "provision: an export waits for another run's lock, and gives up after "
          "OUTPOST_PKI_LOCK_WAIT")
    rc, out = run([ent], dict(env, OUTPOST_PKI_LOCK_WAIT="soon"))
    check(rc == 2 and "OUTPOST_PKI_LOCK_WAIT" in out,
          "provision: a bad OUTPOST_PKI_LOCK_WAIT is a usage error (2)")
    # ... even once the CRL has expired (openssl verify -crl_check would refuse every device)
    os.rename(tmp + "/ca.key.offline", tmp + "/pki/ca.key")
    shutil.copy(tmp + "/pki/crl.pem", tmp + "/crl.pem.good")
    gen = dict(env, OUTPOST_PKI=tmp + "/pki", OUTPOST_SAN="DNS:localhost")
    rc, out = run(["openssl", "ca", "-config", os.path.join(src, "certs/openssl.cnf"), "-gencrl",
                   "-crlexts", "crl_ext", "-crl_lastupdate", "20200101000000Z",
                   "-crl_nextupdate", "20210101000000Z", "-out", tmp + "/pki/crl.pem"], gen)
    check(rc == 0, "provision: an expired CRL for the test" + ("" if rc == 0 else ": " + out))
    os.rename(tmp + "/pki/ca.key", tmp + "/ca.key.offline")
    rc, out = run([ent], env)
    devs = sorted(f for f in tree(exp + "/devices/devices"))
    check(rc == 0 and "renew crl.pem: it expired" in out and "exporting the existing PKI" in out and
          len(devs) == 6,
          "provision: without ca.key and with an expired CRL the devices stay exported (got %s)%s" %
          (devs, "" if rc == 0 else ": " + out))
    shutil.copy(tmp + "/crl.pem.good", tmp + "/pki/crl.pem")
    rc, out = run([ent], env)
    exported = tree(exp)
    rc, out = run([ent, "--devices", "pump-7"], env)
    check(rc == 3 and "Put ca.key back" in out and not os.path.exists(tmp + "/pki/devices/pump-7.crt") and
          tree(exp) == exported,
          "provision: without ca.key an option that issues is refused (3), nothing exported")
    rc, out = run([ent, "--revoke", "device-0002"], env)
    check(rc == 3 and "revoke device device-0002" in out and tree(exp) == exported,
          "provision: without ca.key a revocation is refused (3): " + out)
    os.rename(tmp + "/ca.key.offline", tmp + "/pki/ca.key")
    rc, out = run([ent], env)
    check(rc == 0 and tree(exp) == exported, "provision: with ca.key back, nothing changes")
    # ca.key and ca.crt both gone: no new CA over the old one's certificates (the stack would
    # start with every deployed device orphaned), unless asked for with --new-ca
    for f in ("ca.key", "ca.crt"):
        os.rename(tmp + "/pki/" + f, tmp + "/" + f + ".saved")
    pki_before = tree(tmp + "/pki")
    rc, out = run([ent], env)
    check(rc == 1 and "--new-ca" in out and tree(tmp + "/pki") == pki_before and tree(exp) == exported,
          "provision: without ca.key and ca.crt it makes no new CA and exports nothing: " + out)
    for f in ("ca.key", "ca.crt"):
        os.rename(tmp + "/" + f + ".saved", tmp + "/pki/" + f)
    rc, out = run([ent], env)
    check(rc == 0 and tree(exp) == exported, "provision: with the CA restored, nothing changes")
    # the bridge key rotated (docs/DOCKER.md): its key deleted, the next run issues a new one
    # and revokes the old certificate; the bridge and device volumes get the new files
    old_serial = subprocess.run(["openssl", "x509", "-in", exp + "/bridge/bridge.crt", "-noout", "-serial"],
                                capture_output=True, text=True).stdout.strip().split("=")[-1]
    os.unlink(tmp + "/pki/bridge.key")
    rc, out = run([ent], env)
    crl = subprocess.run(["openssl", "crl", "-in", exp + "/broker/crl.pem", "-noout", "-text"],
                         capture_output=True, text=True).stdout
    new = tree(exp)
    check(rc == 0 and "bridge has a new key" in out and
          new["bridge/bridge.key"][1] != exported["bridge/bridge.key"][1] and
          new["bridge/bridge.key"][1] == tree(tmp + "/pki")["bridge.key"][1] and
          new["devices/bridge.crt"][1] == new["bridge/bridge.crt"][1] != exported["bridge/bridge.crt"][1] and
          ("Serial Number: " + old_serial) in crl and new["bridge/crl.pem"][1] == new["broker/crl.pem"][1],
          "provision: a deleted bridge key is rotated, the old certificate revoked, the new files exported: " + out)
    return env


def test_claims(src, tmp, penv):
    ent = os.path.join(src, "docker/device/entrypoint.sh")
    hc = os.path.join(src, "docker/device/healthcheck.sh")
    fake = tmp + "/fake-agent"
    with open(fake, "w") as f:
        f.write('#!/bin/sh\nenv | grep "^OUTPOST_DEVICE_" | sort >"$FAKE_OUT.tmp"\n'
                'mv "$FAKE_OUT.tmp" "$FAKE_OUT"\nexec sleep 120\n')
    os.chmod(fake, 0o755)
    env = base_env()
    env.update(OUTPOST_DEVICE_PKI=tmp + "/export/devices", OUTPOST_DEVICE_STATE_ROOT=tmp + "/state",
               OUTPOST_DEVICE_BIN=fake)
    logs = tmp + "/logs"

    def start(host, **extra):
        e = dict(env, HOSTNAME=host, FAKE_OUT="%s/agent-%s.env" % (tmp, host), **extra)
        try:
            os.unlink(e["FAKE_OUT"])
        except FileNotFoundError:
            pass
        return spawn([ent], e, "%s/%s.log" % (logs, host))

    def agent_env(host):
        path = "%s/agent-%s.env" % (tmp, host)
        if not wait_for(lambda: os.path.exists(path), 10):
            return {}
        return dict(l.split("=", 1) for l in read(path).splitlines() if "=" in l)

    def health(host):
        return run([hc], dict(env, HOSTNAME=host), 30)[0]

    reps = {h: start(h) for h in ("h1", "h2", "h3")}
    ids = {h: agent_env(h).get("OUTPOST_DEVICE_ID") for h in reps}
    check(sorted(ids.values(), key=str) == ["device-0001", "device-0002", "device-0003"],
          "claims: three concurrent replicas get three distinct identities (%s)" % ids)
    e = agent_env("h1")
    i = ids["h1"] or "?"
    d = env["OUTPOST_DEVICE_PKI"]
    check(e.get("OUTPOST_DEVICE_CERT") == "%s/devices/%s.crt" % (d, i) and
          e.get("OUTPOST_DEVICE_KEY") == "%s/devices/%s.key" % (d, i) and
          e.get("OUTPOST_DEVICE_CA") == d + "/ca.crt" and e.get("OUTPOST_DEVICE_BRIDGE_CERT") == d + "/bridge.crt" and
          e.get("OUTPOST_DEVICE_STATE_DIR") == "%s/state/%s" % (tmp, i),
          "claims: the agent gets its certificate, key, CA, bridge certificate and state directory")
    check(not any(k in e for k in ("OUTPOST_DEVICE_PKI", "OUTPOST_DEVICE_STATE_ROOT", "OUTPOST_DEVICE_BIN")),
          "claims: the entrypoint's own variables do not reach the agent")
    check(stat.S_IMODE(os.stat("%s/state/%s" % (tmp, i)).st_mode) == 0o700, "claims: state directory is 0700")

    p4 = start("h4")
    try:
        p4.wait(15)
    except subprocess.TimeoutExpired:
        pass
    check(p4.returncode == 2 and "in use" in read(logs + "/h4.log"),
          "claims: a fourth replica with three identities exits 2 naming the cause")

    check(health("h1") == 0, "healthcheck: healthy while the agent holds its identity")
    stop(reps["h1"])
    stop(reps["h2"])
    check(health("h1") == 1, "healthcheck: unhealthy once the agent is gone")

    reps["h2"] = start("h2")
    check(agent_env("h2").get("OUTPOST_DEVICE_ID") == ids["h2"],
          "claims: a restarted replica (same hostname) gets its identity back")
    reps["h5"] = start("h5")
    check(agent_env("h5").get("OUTPOST_DEVICE_ID") == ids["h1"], "claims: a new replica takes the freed identity")
    check(not os.path.exists(tmp + "/state/.claims/host-h1"), "claims: the old record of that identity is dropped")

    p = start("h6", OUTPOST_DEVICE_ID=ids["h1"] or "device-0001")
    p.wait(15)
    check(p.returncode == 2 and "held by another replica" in read(logs + "/h6.log"),
          "claims: an explicit identity held by another replica is refused (2)")
    p = start("h7", OUTPOST_DEVICE_ID="../etc")
    p.wait(15)
    check(p.returncode == 2, "claims: an invalid OUTPOST_DEVICE_ID is refused (2)")
    for r in reps.values():
        stop(r)
    rc, out = run([ent, "--help"], dict(env, OUTPOST_DEVICE_BIN="true"))
    check(rc == 0 and "Usage" in out, "claims: --help")


def test_stack(src, build, tmp, penv):
    plugin = os.path.join(build, "broker/outpost_auth.so")
    agent = os.path.join(build, "device/outpost-device")
    wss, mqtts, internal = free_port(), free_port(), free_port()
    benv = base_env()
    benv.update(OUTPOST_PKI_DIR=tmp + "/export/broker", OUTPOST_BROKER_DIR=tmp + "/broker",
                OUTPOST_WSS_PORT=str(wss), OUTPOST_MQTTS_PORT=str(mqtts), OUTPOST_INTERNAL_PORT=str(internal),
                OUTPOST_BROKER_BIND="127.0.0.1", OUTPOST_INTERNAL_BIND="localhost", OUTPOST_AUTH_PLUGIN=plugin)
    blog = tmp + "/logs/broker.log"
    hc = os.path.join(src, "docker/mosquitto/healthcheck.sh")
    # paths are substituted literally ('&' means "the match" to bash 5.2's ${x//p/r})
    odd = tmp + "/R&D broker"
    rc, out = run([os.path.join(src, "docker/mosquitto/run-broker.sh"), "--render-only"],
                  dict(benv, OUTPOST_BROKER_DIR=odd), 10)
    conf = read(odd + "/mosquitto.conf")
    check(rc == 0 and ("persistence_location %s/" % odd) in conf and "@DATA_DIR@" not in conf,
          "stack: run-broker.sh renders a data directory named '%s' as it is (%s)" % (odd, out.strip()))
    check("max_queued_bytes 268435456" in conf and "max_queued_messages 200000" in conf,
          "stack: run-broker.sh renders the default queue limits")
    for var, val, ok in (("OUTPOST_BROKER_MAX_QUEUED_BYTES", "0", False),
                         ("OUTPOST_BROKER_MAX_QUEUED_MESSAGES", "2147483648", False),
                         ("OUTPOST_BROKER_MAX_QUEUED_MESSAGES", "2147483647", True),
                         ("OUTPOST_BROKER_MAX_QUEUED_BYTES", "1048576", True)):
        rc, out = run([os.path.join(src, "docker/mosquitto/run-broker.sh"), "--render-only"],
                      dict(benv, **{var: val}), 10)
        conf = read(tmp + "/broker/mosquitto.conf") if rc == 0 else ""
        line = "max_queued_%s %s" % ("bytes" if var.endswith("BYTES") else "messages", val)
        check(rc == 0 and line in conf if ok else rc == 2 and var + ": not a number from 1 to" in out,
              "stack: run-broker.sh %s %s=%s (mosquitto reads 0, or a count past an int, as no "
              "limit): %d %s" % ("renders" if ok else "refuses", var, val, rc, out.strip()))
    if os.getuid() == 0 and shutil.which("setpriv"):
        # a uid without a name (docker run --user 54321, Kubernetes runAsUser)
        nameless = tmp + "/nameless"
        os.chmod(tmp, 0o711)  # its files are in a directory it can reach
        shutil.copytree(tmp + "/export/broker", nameless + "/pki")  # files it can read
        for d, _, files in os.walk(nameless):
            os.chmod(d, 0o777)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        rc, out = run(["setpriv", "--reuid", "54321", "--regid", "54321", "--clear-groups",
                       os.path.join(src, "docker/mosquitto/run-broker.sh"), "--render-only"],
                      dict(benv, OUTPOST_BROKER_DIR=nameless + "/data",
                           OUTPOST_PKI_DIR=nameless + "/pki"), 10)
        check(rc == 0 and "user 54321" in read(nameless + "/data/mosquitto.conf"),
              "stack: run-broker.sh runs as a uid without a passwd entry: %d %s" % (rc, out.strip()))
    if os.getuid() == 0:
        # a user mosquitto would switch to but who cannot read the PKI files
        try:
            rc, out = run([os.path.join(src, "docker/mosquitto/run-broker.sh")],
                          dict(benv, OUTPOST_BROKER_USER="nobody"), 10)
        except subprocess.TimeoutExpired:
            rc, out = -1, "the broker started"
        check(rc == 2 and "nobody (OUTPOST_BROKER_USER) cannot read" in out,
              "stack: run-broker.sh refuses a broker user who cannot read the keys" +
              ("" if rc == 2 else ": %d %s" % (rc, out)))
    broker = spawn([os.path.join(src, "docker/mosquitto/run-broker.sh")], benv, blog)
    ok = wait_for(lambda: run([hc], benv, 10)[0] == 0 or broker.poll() is not None, 15)
    check(ok and broker.poll() is None, "stack: broker on the broker volume, healthy (internal listener bound to a name)")
    if broker.poll() is not None:
        print(read(blog))
        return
    conf = read(tmp + "/broker/mosquitto.conf")
    check("listener %d localhost" % internal in conf, "stack: the internal listener is bound to the given name")
    # the health check connects to nothing: mosquitto logged each probe's connection as failed
    # ("Client connection from ... failed"), every 30 s, burying real handshake failures
    logged = read(blog).count("Client connection from")
    probes = [run([hc], benv, 10)[0] for _ in range(3)]
    time.sleep(0.5)
    check(probes == [0, 0, 0] and read(blog).count("Client connection from") == logged,
          "stack: the broker health check leaves no line in the broker log (%s)" % probes)

    # The agent as compose configures it (only the broker's address differs), and a second one
    # sampling every second so that the revocation shows at once.
    denv = base_env()
    denv.update(compose_env(src, "device"))
    denv.update(OUTPOST_DEVICE_PKI=tmp + "/export/devices", OUTPOST_DEVICE_STATE_ROOT=tmp + "/dstate",
                OUTPOST_DEVICE_BIN=agent, OUTPOST_DEVICE_BROKER_HOST="localhost",
                OUTPOST_DEVICE_WSS_PORT=str(wss), OUTPOST_DEVICE_MQTTS_PORT=str(mqtts),
                OUTPOST_DEVICE_TRANSPORT="wss")
    dev1 = spawn([os.path.join(src, "docker/device/entrypoint.sh")], dict(denv, HOSTNAME="real1"), tmp + "/logs/real1.log")
    fast = dict(denv, HOSTNAME="real3", OUTPOST_DEVICE_ID="device-0003", OUTPOST_DEVICE_SAMPLE_INTERVAL="1s",
                OUTPOST_DEVICE_BATCH_INTERVAL="1s", OUTPOST_DEVICE_BACKOFF_MAX="2s")
    dlog = tmp + "/logs/real3.log"
    dev = spawn([os.path.join(src, "docker/device/entrypoint.sh")], fast, dlog)
    connected = wait_for(lambda: ("as device-0001" in read(blog) and "as device-0003" in read(blog)) or
                         dev.poll() is not None or dev1.poll() is not None, 20)
    check(connected and dev.poll() is None and dev1.poll() is None,
          "stack: outpost-device with compose's settings, via the entrypoint, connects over WSS with the device volume's files")
    check(run([os.path.join(src, "docker/device/healthcheck.sh")], dict(fast), 30)[0] == 0,
          "stack: the real agent is healthy")
    test_bridge(src, build, tmp, internal)

    rc, out = run([os.path.join(src, "docker/provision/entrypoint.sh"), "--revoke", "device-0003"], penv)
    check(rc == 0, "stack: revocation through the provision entrypoint" + ("" if rc == 0 else ": " + out))
    check(not os.path.exists(tmp + "/export/devices/devices/device-0003.key"), "stack: the revoked identity leaves the device volume")
    enforced = wait_for(lambda: "denied device-0003: certificate revoked" in read(blog), 15)
    check(enforced and "reloaded CRL" in read(blog),
          "stack: the broker reloads the CRL from its volume and refuses the device without a restart")
    rc = stop(dev, 15)
    rc1 = stop(dev1, 15)
    check(rc == 0 and rc1 == 0, "stack: the agents stop cleanly on SIGTERM (status %s, %s)" % (rc, rc1))
    stop(broker)
    check(run([hc], benv, 10)[0] == 1, "stack: broker health check fails once it is gone")
    if FAILS:
        print("--- broker log (tail)\n" + "\n".join(read(blog).splitlines()[-30:]))
        print("--- device log (tail)\n" + "\n".join(read(dlog).splitlines()[-30:]))


def test_bridge(src, build, tmp, internal):
    """outpost-bridge as compose configures it, on the bridge volume's files (once the bridge is
    built in this tree)."""
    bridge = os.path.join(build, "bridge/outpost-bridge")
    ctl = os.path.join(build, "bridge/outpostctl")
    if not (os.path.exists(bridge) and os.path.exists(ctl)):
        print("note test_docker_entrypoints: %s not built; the bridge part is skipped" % bridge)
        return
    store = "sqlite:%s/bridge/outpost.db" % tmp
    os.makedirs(tmp + "/bridge")
    env = base_env()
    env.update(compose_env(src, "bridge"))
    env.update(OUTPOST_BRIDGE_PKI_DIR=tmp + "/export/bridge", OUTPOST_BRIDGE_BROKER_HOST="localhost",
               OUTPOST_BRIDGE_BROKER_PORT=str(internal), OUTPOST_BRIDGE_STORE=store, OUTPOST_STORE=store,
               PGPASSFILE=tmp + "/export/bridge/pgpass")
    log = tmp + "/logs/bridge.log"
    p = spawn([bridge], env, log)

    def stored():
        rc, out = run([ctl, "devices", "--format", "csv"], env, 30)
        if rc != 0 or "device-0003" not in out or "device-0001" not in out:
            return False
        rc, out = run([ctl, "readings", "--device", "device-0003", "--limit", "1", "--format", "csv"], env, 30)
        return rc == 0 and len(out.strip().splitlines()) >= 2
    ok = wait_for(lambda: stored() or p.poll() is not None, 30)
    check(ok and p.poll() is None,
          "stack: outpost-bridge with compose's settings, on the bridge volume, enrols both devices and stores readings")
    rc, out = run([ctl, "events", "--limit", "1"], env, 30)
    check(rc == 0, "stack: the bridge's health check command (outpostctl events --limit 1) succeeds")
    rc = stop(p, 30)
    check(rc == 0, "stack: the bridge stops cleanly on SIGTERM (status %s)" % rc)
    if FAILS:
        print("--- bridge log (tail)\n" + "\n".join(read(log).splitlines()[-30:]))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=os.path.normpath(os.path.join(here, "../..")))
    ap.add_argument("--build", default=None)
    ap.add_argument("--tmp", default=None, help="parent of the scratch directory [BUILD/tests/tmp]")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    src = os.path.abspath(a.source)
    build = os.path.abspath(a.build or os.path.join(src, "build"))
    for need in ("broker/outpost_auth.so", "device/outpost-device"):
        if not os.path.exists(os.path.join(build, need)):
            print("test_docker_entrypoints: %s/%s is missing (cmake --build)" % (build, need), file=sys.stderr)
            return 2
    for tool in ("openssl", "mosquitto", "flock", "bash"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            print("test_docker_entrypoints: %s not found (scripts/bootstrap.sh)" % tool, file=sys.stderr)
            return 2
    base = os.path.abspath(a.tmp or os.path.join(build, "tests", "tmp"))
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="docker-entrypoints-", dir=base)
    os.makedirs(tmp + "/logs")
    try:
        penv = test_provision(src, tmp)
        if not FAILS:
            test_claims(src, tmp, penv)
            test_stack(src, build, tmp, penv)
    finally:
        for p in PROCS:
            stop(p, 5)
        if not a.keep and not FAILS:
            shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("test_docker_entrypoints: %d failed (files in %s)" % (len(FAILS), tmp))
        return 1
    print("test_docker_entrypoints: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
