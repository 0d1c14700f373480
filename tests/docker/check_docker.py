#!/usr/bin/env python3
"""check_docker.py - offline validation of docker/ (there is no container engine on the test
machines): what can be proven about the images and the compose stack without running them.

  schema     `docker-compose config` (Debian's docker-compose 1.29) accepts the compose file
  compose    security properties of the resolved compose file: published ports exactly 443 and
             8883, only on the broker; no privileged/host namespaces/capabilities/bind mounts;
             PKI volumes: the CA volume only in the provision service, every role volume
             read-only and only in its role; restart policies, health checks, start order;
             devices scalable and kept off the backend network
  dockerfile structure of docker/Dockerfile: Debian bookworm bases, no ADD, no PKI material or
             whole-context COPY in a runtime stage, a non-root USER in every final stage, the
             repository layout mirrored under /usr/share/outpost, entrypoints and health check
             commands present and executable, RUN commands parse (sh -n), apt hygiene
  context    .dockerignore, with Docker's matching rules, against the real tree: no var/, build
             tree, key file or PEM private key in the build context; every COPY source in it
  shell      bash -n and shellcheck on the container scripts
  packages   every package a stage installs exists in bookworm (apt-cache), the build stage has
             the -dev packages of scripts/bootstrap.sh, and each runtime stage installs the
             packages that hold the shared libraries its binaries need (readelf + dpkg -S on the
             binaries built in the build tree)

Then the self-test: each of a list of deliberately broken copies (a port published by the
bridge, a key copied into an image, USER removed, .dockerignore without *.key, ...) must be
rejected, so a checker that stopped checking cannot pass.

Usage: check_docker.py [--source DIR] [--build DIR] [--no-self-test] [-v]
Exit status: 0 all good, 1 a check failed, 2 usage or missing tool."""

import argparse
import copy
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("check_docker: python3-yaml is missing (scripts/bootstrap.sh installs it)", file=sys.stderr)
    sys.exit(2)

# What the stack promises (DESIGN.md, docs/DOCKER.md).
BROKER_PORTS = {("443", "443"), ("8883", "8883")}
CA_VOLUME = "pki"
PROVISION = "provision"
# The only secret volume each service may mount (read-only).
ROLE_VOLUMES = {
    "broker": {"broker-pki"},
    "bridge": {"bridge-pki"},
    "device": {"device-pki"},
    "postgres": {"postgres-secret"},
}
# Shared libraries of each image's binaries (relative to the build tree).
STAGE_BINARIES = {
    "broker": ["broker/outpost_auth.so"],
    "bridge": ["bridge/outpost-bridge", "bridge/outpostctl"],
    "device": ["device/outpost-device"],
}
PKI_PATH = re.compile(r"(\.(key|pem|crt|csr|p12|pfx|der)$)|(^|/)(pki|var|certs/out)(/|$)")
PEM_PRIVATE = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE", re.I)
DOCKERFILE_INSTR = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                    "SHELL"}
# Sanitizer runtimes come from an ASan/UBSan build tree, never from the images' release build.
SANITIZER_LIB = re.compile(r"^lib(asan|ubsan|lsan|tsan)\.so")
ESSENTIAL = {"libc6"}

VERBOSE = False
_said = set()


def note(msg):
    if VERBOSE:
        print("  " + msg)


def say_once(msg):
    if msg not in _said:
        _said.add(msg)
        print("check_docker: note: " + msg)


@functools.lru_cache(maxsize=None)
def sh_syntax(script):
    """sh -n (dash, /bin/sh in the images) on a RUN command -> error text or ''."""
    r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    return r.stderr.strip() or "sh -n failed" if r.returncode else ""


# --------------------------------------------------------------------------------------------
# .dockerignore, with the rules of Docker's patternmatcher: patterns are cleaned paths relative
# to the context root; '*' and '?' never match '/', '**' matches any number of directories;
# a path is excluded when it or one of its parent directories matches; the last matching
# pattern wins, '!' re-includes.

def ignore_patterns(text):
    pats = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        if neg:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/")
        if line in ("", "."):
            continue
        pats.append((neg, line, re.compile(pattern_regex(line))))
    return pats


def pattern_regex(p):
    out, i = "^", 0
    while i < len(p):
        c = p[i]
        if c == "*":
            if i + 1 < len(p) and p[i + 1] == "*":
                i += 2
                if i < len(p) and p[i] == "/":
                    i += 1
                out += ".*" if i >= len(p) else "(.*/)?"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "\\" and i + 1 < len(p):
            i += 1
            out += re.escape(p[i])
        elif c == "[":
            j = p.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += "[" + p[i + 1:j].replace("!", "^", 1) + "]"
                i = j
        else:
            out += re.escape(c)
        i += 1
    return out + "$"


def ignored(pats, path):
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts))]
    matched = False
    for neg, _, rx in pats:
        if neg != matched:
            continue
        m = rx.match(path) is not None or any(rx.match(pp) for pp in prefixes)
        if m:
            matched = not neg
    return matched


def context_files(root, pats):
    """Files of the build context (paths relative to root), pruning excluded directories."""
    out = []
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        rel = "" if rel == "." else rel + "/"
        keep = []
        for x in dirs:
            p = rel + x
            reinclude = any(neg and pat.startswith(p + "/") for neg, pat, _ in pats)
            if not ignored(pats, p) or reinclude:
                keep.append(x)
        dirs[:] = keep
        for f in files:
            p = rel + f
            if not ignored(pats, p):
                out.append(p)
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Dockerfile

class Stage:
    def __init__(self, index, name, base, line):
        self.index, self.name, self.base, self.line = index, name, base, line
        self.instrs = []  # (line, INSTR, args)


def parse_dockerfile(text):
    """-> (global ARG defaults, [Stage]); raises ValueError on a syntax error."""
    logical, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as Docker does
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        logical.append((start, buf))
        buf = ""
    if buf:
        raise ValueError("line %d: continuation at end of file" % start)
    gargs, stages = {}, []
    for n, l in logical:
        m = re.match(r"([A-Za-z]+)(\s+(.*))?$", l)
        if not m:
            raise ValueError("line %d: not an instruction: %s" % (n, l))
        instr, args = m.group(1).upper(), (m.group(3) or "").strip()
        if instr not in DOCKERFILE_INSTR:
            raise ValueError("line %d: unknown instruction %s" % (n, instr))
        if args.startswith("[") and instr in ("RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "VOLUME"):
            try:
                json.loads(args)
            except ValueError:
                raise ValueError("line %d: %s: invalid JSON array" % (n, instr))
        if instr == "FROM":
            fm = re.match(r"(--platform=\S+\s+)?(\S+)(\s+AS\s+(\S+))?$", args, re.I)
            if not fm:
                raise ValueError("line %d: FROM: cannot parse '%s'" % (n, args))
            stages.append(Stage(len(stages), fm.group(4), fm.group(2), n))
            continue
        if not stages:
            if instr != "ARG":
                raise ValueError("line %d: %s before the first FROM" % (n, instr))
            k, _, v = args.partition("=")
            gargs[k.strip()] = v.strip()
            continue
        stages[-1].instrs.append((n, instr, args))
    if not stages:
        raise ValueError("no FROM")
    return gargs, stages


def expand(s, env):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), s)


def copy_parts(args):
    """COPY/ADD arguments -> (flags dict, sources, dest)."""
    flags = {}
    if args.startswith("["):
        items = json.loads(args)
    else:
        items = args.split()
    while items and items[0].startswith("--"):
        k, _, v = items.pop(0)[2:].partition("=")
        flags[k] = v
    if len(items) < 2:
        raise ValueError("needs a source and a destination")
    return flags, items[:-1], items[-1]


def stage_by_name(stages):
    return {s.name: s for s in stages if s.name}


def final_stages(stages):
    """Stages no other stage builds on or copies from: the images."""
    used = set()
    for s in stages:
        used.add(s.base)
        for _, instr, args in s.instrs:
            if instr == "COPY":
                f, _, _ = copy_parts(args)
                if "from" in f:
                    used.add(f["from"])
    return [s for s in stages if s.name not in used and str(s.index) not in used]


def chain(stage, names):
    """The stage and the stages it is built on, base first."""
    out, s = [], stage
    while s is not None:
        out.insert(0, s)
        s = names.get(s.base)
    return out


def stage_files(stage, names):
    """Paths a stage (with its bases) creates with COPY: {dest: (from stage or None, source)}."""
    files = {}
    for s in chain(stage, names):
        for _, instr, args in s.instrs:
            if instr != "COPY":
                continue
            f, srcs, dest = copy_parts(args)
            for src in srcs:
                if dest.endswith("/") or len(srcs) > 1:
                    files[dest.rstrip("/") + "/" + os.path.basename(src.rstrip("/"))] = (f.get("from"), src)
                else:
                    files[dest] = (f.get("from"), src)
    return files


def effective_user(stage, names):
    user = None
    for s in chain(stage, names):
        for _, instr, args in s.instrs:
            if instr == "USER":
                user = args.strip()
    return user


def created_users(stage, names):
    users = set()
    for s in chain(stage, names):
        for _, instr, args in s.instrs:
            if instr == "RUN":
                users.update(re.findall(r"useradd\b[^&;|]*?\s([a-z_][a-z0-9_-]*)\s*(?:$|&&|;|\\)", args))
    return users


def apt_packages(stage):
    pkgs = []
    for _, instr, args in stage.instrs:
        if instr != "RUN":
            continue
        for m in re.finditer(r"apt-get\s+install\s+([^&;|]*)", args):
            pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def executable_path(name, files):
    """Where an exec-form command comes from in the image, or None."""
    if name.startswith("/"):
        return name if name in files else None
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin"):
        if d + "/" + name in files:
            return d + "/" + name
    return None


def check_dockerfile(text, src, ctx_files, compose_targets):
    v = []
    root = src  # (src names each COPY source below)
    try:
        gargs, stages = parse_dockerfile(text)
    except ValueError as e:
        return ["Dockerfile: %s" % e], None
    names = stage_by_name(stages)
    finals = final_stages(stages)
    final_names = {s.name for s in finals}
    for s in stages:
        base = s.base
        if base not in names:
            img = expand(base, gargs)
            if not re.match(r"^(docker\.io/(library/)?)?debian:bookworm(-slim)?(@sha256:[0-9a-f]{64})?$", img):
                v.append("Dockerfile:%d: FROM %s: not Debian bookworm" % (s.line, img))
        elif names[base].index >= s.index:
            v.append("Dockerfile:%d: FROM %s: stage defined later" % (s.line, base))
    for t in compose_targets:
        if t not in names:
            v.append("Dockerfile: compose builds target '%s', which is not a stage" % t)
        elif t not in final_names:
            v.append("Dockerfile: target '%s' is used by another stage; an image must be a final stage" % t)
    for s in stages:
        is_final = s in finals
        env = dict(gargs)
        for n, instr, args in s.instrs:
            where = "Dockerfile:%d" % n
            if instr == "ADD":
                v.append("%s: ADD (use COPY; ADD fetches URLs and unpacks archives)" % where)
            if instr in ("ARG", "ENV"):
                for k, val in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=?(\S*)", args):
                    if SECRET_NAME.search(k):
                        v.append("%s: %s %s: secrets must not be built into images" % (where, instr, k))
                    if "PRIVATE KEY" in val or "BEGIN" in val:
                        v.append("%s: %s %s: key material in the image" % (where, instr, k))
                    env[k] = val
            if instr in ("COPY", "ADD"):
                try:
                    f, srcs, dest = copy_parts(args)
                except ValueError as e:
                    v.append("%s: %s: %s" % (where, instr, e))
                    continue
                if "from" in f:
                    if f["from"] not in names or names[f["from"]].index >= s.index:
                        v.append("%s: COPY --from=%s: no such earlier stage" % (where, f["from"]))
                    for src in srcs:
                        if PKI_PATH.search(src.lstrip("/")):
                            v.append("%s: COPY --from=%s %s: PKI material in an image" % (where, f["from"], src))
                    continue
                for src in srcs:
                    rel = os.path.normpath(src).lstrip("/")
                    if PKI_PATH.search(rel) or PKI_PATH.search(src):
                        v.append("%s: COPY %s: PKI material or local state in an image" % (where, src))
                    if rel in (".", ""):
                        if is_final:
                            v.append("%s: COPY %s: the whole context in a runtime stage" % (where, src))
                        continue
                    if ctx_files is not None and rel not in ctx_files and \
                            not any(p.startswith(rel + "/") for p in ctx_files):
                        v.append("%s: COPY %s: not in the build context (missing or .dockerignore'd)" % (where, src))
                    if is_final:
                        # the repository layout is mirrored under /usr/share/outpost, so scripts
                        # find each other by the same relative paths as in a checkout
                        want = "/usr/share/outpost/" + os.path.dirname(rel) + "/"
                        if dest.startswith("/usr/share/outpost") and dest.rstrip("/") + "/" != want:
                            v.append("%s: COPY %s %s: expected %s (mirror of the repository)" % (where, src, dest, want))
                if is_final and "chown" in f:
                    v.append("%s: COPY --chown: programs and configuration must stay root-owned" % where)
            if instr == "EXPOSE":
                extra = {x.split("/")[0] for x in args.split()} - {p for p, _ in BROKER_PORTS}
                if extra:
                    v.append("%s: EXPOSE %s: `docker run -P` would publish it" % (where, " ".join(sorted(extra))))
            if instr == "RUN" and not args.startswith("["):
                err = sh_syntax(args)
                if err:
                    v.append("%s: RUN does not parse (sh -n): %s" % (where, err))
                if re.search(r"apt-get\s+install", args):
                    if "--no-install-recommends" not in args:
                        v.append("%s: apt-get install without --no-install-recommends" % where)
                    if "rm -rf /var/lib/apt/lists" not in args:
                        v.append("%s: apt lists left in the layer (rm -rf /var/lib/apt/lists/*)" % where)
                    if "apt-get update" not in args:
                        v.append("%s: apt-get install without apt-get update in the same RUN" % where)
    for s in finals:
        where = "Dockerfile: stage %s" % (s.name or s.index)
        user = effective_user(s, names)
        if not user:
            v.append("%s: no USER (it would run as root)" % where)
        else:
            u = user.split(":")[0]
            if u in ("root", "0"):
                v.append("%s: USER %s is root" % (where, user))
            elif not u.isdigit() and u not in created_users(s, names):
                v.append("%s: USER %s is never created (useradd)" % (where, user))
        files = stage_files(s, names)
        for n, instr, args in [i for st in chain(s, names) for i in st.instrs]:
            cmd = None
            if instr == "ENTRYPOINT" and args.startswith("["):
                cmd = json.loads(args)[0]
            elif instr == "HEALTHCHECK":
                m = re.search(r"CMD\s+(\[.*\])\s*$", args)
                if m:
                    cmd = json.loads(m.group(1))[0]
            elif instr == "ENTRYPOINT":
                v.append("Dockerfile:%d: ENTRYPOINT in shell form (signals would not reach the program)" % n)
            if cmd is None:
                continue
            path = executable_path(cmd, files)
            if path is None:
                v.append("Dockerfile:%d: %s %s: no COPY in stage %s puts it there" % (n, instr, cmd, s.name))
                continue
            frm, srcp = files[path]
            if frm is None and os.path.exists(os.path.join(root, srcp)) and \
                    not os.stat(os.path.join(root, srcp)).st_mode & stat.S_IXUSR:
                v.append("Dockerfile:%d: %s: %s is not executable in the repository" % (n, instr, srcp))
            # the scripts it runs by their place beside it ("$here/NAME.sh", the mirrored
            # repository layout) are in the image too, and theirs
            todo, seen = [(path, frm, srcp)], set()
            while todo:
                ipath, frm, srcp = todo.pop()
                full = os.path.join(root, srcp)
                if frm is not None or ipath in seen or not os.path.isfile(full):
                    continue
                seen.add(ipath)
                with open(full, errors="replace") as fh:
                    body = fh.read()
                for ref in re.findall(r"\$here/([A-Za-z0-9_./-]+\.sh)\b", body):
                    want = os.path.normpath(os.path.join(os.path.dirname(ipath), ref))
                    if want in files:
                        todo.append((want,) + files[want])
                    else:
                        v.append("Dockerfile:%d: %s %s runs %s, which no COPY in stage %s puts there" %
                                 (n, instr, cmd, want, s.name))
    return v, (gargs, stages)


# --------------------------------------------------------------------------------------------
# compose

def ports_of(svc):
    """-> [(host ip, published, target)] as strings; published '' = a random host port."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", "") or ""), str(p.get("target", ""))))
            continue
        s = str(p).split("/")[0]
        parts = s.rsplit(":", 2)
        if len(parts) == 1:
            out.append(("", "", parts[0]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append((parts[0], parts[1], parts[2]))
    return out


def mounts_of(svc):
    """-> [(type, source, target, read_only)]"""
    out = []
    for m in svc.get("volumes") or []:
        if isinstance(m, dict):
            out.append((m.get("type", "volume"), str(m.get("source", "")), str(m.get("target", "")),
                        bool(m.get("read_only", False))))
            continue
        parts = str(m).split(":")
        if len(parts) == 1:
            out.append(("volume", "", parts[0], False))
            continue
        src, dst = parts[0], parts[1]
        opts = parts[2].split(",") if len(parts) > 2 else []
        kind = "bind" if src.startswith(("/", ".", "~")) else "volume"
        out.append((kind, src, dst, "ro" in opts))
    return out


def networks_of(svc):
    n = svc.get("networks") or {}
    return set(n) if isinstance(n, (dict, list)) else set()


def is_secret_volume(name):
    return name == CA_VOLUME or name.endswith("pki") or name.endswith("secret")


def check_compose(c, stage_info):
    v = []
    services = c.get("services") or {}
    nets = c.get("networks") or {}
    for name in ("provision", "broker", "bridge", "device"):
        if name not in services:
            v.append("compose: no service '%s'" % name)
    finals = {}
    if stage_info:
        gargs, stages = stage_info
        names = stage_by_name(stages)
        finals = {s.name: s for s in final_stages(stages)}
    backend = set()
    for name, svc in services.items():
        where = "compose: %s" % name
        # ports
        ports = ports_of(svc)
        if name == "broker":
            got = {(p, t) for _, p, t in ports}
            if got != BROKER_PORTS or len(ports) != len(BROKER_PORTS):
                v.append("%s: publishes ports %s; exactly 443:443 and 8883:8883 expected" % (where, sorted(got)))
        elif ports:
            v.append("%s: publishes ports %s; only the broker may" % (where, ports))
        # An image name with a build: Compose v2 otherwise pulls outpost/<name> from Docker
        # Hub first and builds only if that fails (someone else's image, mounting the CA).
        if "build" in svc and svc.get("pull_policy") not in ("build", "never"):
            v.append("%s: built here but pull_policy is %s: compose would pull %s from a registry first"
                     % (where, svc.get("pull_policy", "unset"), svc.get("image", "its image")))
        # privileges and host namespaces
        if svc.get("privileged"):
            v.append("%s: privileged" % where)
        for k in ("network_mode", "pid", "ipc", "userns_mode", "uts", "cgroup"):
            val = str(svc.get(k, ""))
            if val == "host" or val.startswith("container:") or val.startswith("service:"):
                v.append("%s: %s: %s shares another namespace" % (where, k, val))
        if svc.get("cap_add"):
            v.append("%s: cap_add %s" % (where, svc["cap_add"]))
        if svc.get("devices"):
            v.append("%s: devices %s" % (where, svc["devices"]))
        for so in svc.get("security_opt") or []:
            if "unconfined" in str(so) or "no-new-privileges:false" in str(so):
                v.append("%s: security_opt %s" % (where, so))
        if "no-new-privileges:true" not in [str(x) for x in svc.get("security_opt") or []]:
            v.append("%s: without security_opt no-new-privileges:true" % where)
        if "ALL" not in (svc.get("cap_drop") or []):
            v.append("%s: capabilities not dropped (cap_drop: [ALL])" % where)
        user = str(svc.get("user", "")).split(":")[0]
        if user in ("root", "0"):
            v.append("%s: user %s" % (where, svc["user"]))
        # images built here: a final, non-root stage of docker/Dockerfile
        b = svc.get("build")
        if b is not None:
            if not isinstance(b, dict) or not b.get("target"):
                v.append("%s: build without a target stage" % where)
            else:
                if not str(b.get("dockerfile", "")).endswith("docker/Dockerfile"):
                    v.append("%s: build.dockerfile %s is not docker/Dockerfile" % (where, b.get("dockerfile")))
                if stage_info and b["target"] not in finals:
                    v.append("%s: build target %s is not a final stage of docker/Dockerfile" % (where, b["target"]))
            if not svc.get("read_only"):
                v.append("%s: root filesystem not read_only" % where)
        elif not svc.get("user"):
            v.append("%s: third-party image without a non-root user:" % where)
        # volumes
        for kind, srcv, dst, ro in mounts_of(svc):
            if kind != "volume":
                v.append("%s: %s mount %s:%s (named volumes only)" % (where, kind, srcv, dst))
                continue
            if not is_secret_volume(srcv):
                continue
            if name == PROVISION:
                continue
            if srcv == CA_VOLUME:
                v.append("%s: mounts the CA volume '%s' (provision only)" % (where, srcv))
            elif srcv not in ROLE_VOLUMES.get(name, set()):
                v.append("%s: mounts %s, another role's keys" % (where, srcv))
            if not ro:
                v.append("%s: PKI volume %s mounted read-write" % (where, srcv))
        # lifecycle
        hc = svc.get("healthcheck") or {}
        test = hc.get("test")
        if name == PROVISION:
            if str(svc.get("restart", "no")) not in ("no", "False", "false"):
                v.append("%s: a one-shot service must not restart (restart: \"no\")" % where)
            if str(svc.get("network_mode", "")) != "none":
                v.append("%s: the CA holder must have no network (network_mode: none)" % where)
        else:
            if svc.get("restart") != "unless-stopped":
                v.append("%s: restart %s; unless-stopped expected" % (where, svc.get("restart")))
            if not test or hc.get("disable") or (isinstance(test, list) and test[:1] == ["NONE"]) or test == "NONE":
                v.append("%s: no health check" % where)
            dep = (svc.get("depends_on") or {})
            cond = dep.get(PROVISION, {}).get("condition") if isinstance(dep, dict) else None
            if cond != "service_completed_successfully":
                v.append("%s: does not wait for provision (service_completed_successfully)" % where)
        # health check commands exist in the image
        if b is not None and stage_info and isinstance(test, list) and test[:1] == ["CMD"] and \
                isinstance(b, dict) and b.get("target") in finals:
            files = stage_files(finals[b["target"]], names)
            if executable_path(test[1], files) is None:
                v.append("%s: health check %s: not in image %s" % (where, test[1], b["target"]))
    # networks: the broker's internal listener, the bridge and the store are on a network
    # with no route out and no devices
    if "bridge" in services:
        backend = networks_of(services["bridge"])
        for n in backend:
            if not (nets.get(n) or {}).get("internal"):
                v.append("compose: network %s of the bridge is not internal: true" % n)
    if "device" in services:
        dev = services["device"]
        for n in networks_of(dev) & backend:
            v.append("compose: device is on %s, the bridge's network (reaches the internal listener)" % n)
        for k in ("container_name", "hostname"):
            if k in dev:
                v.append("compose: device: %s defeats --scale (each replica needs its own)" % k)
    if "broker" in services:
        env = services["broker"].get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        bind = str(env.get("OUTPOST_INTERNAL_BIND", "127.0.0.1"))
        if bind in ("127.0.0.1", "::1", "localhost"):
            v.append("compose: broker: OUTPOST_INTERNAL_BIND %s: the bridge container cannot reach it" % bind)
    return v


def compose_config(compose_file, project_dir=None):
    """docker-compose config (schema check, interpolation, anchors) -> (rc, stdout, stderr)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    cmd = ["docker-compose", "-f", compose_file, "--profile", "postgres", "config"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return r.returncode, r.stdout, r.stderr


# --------------------------------------------------------------------------------------------
# packages

def apt_available():
    r = subprocess.run(["apt-cache", "policy", "libc6"], capture_output=True, text=True)
    return r.returncode == 0 and "Candidate:" in r.stdout and "(none)" not in r.stdout


@functools.lru_cache(maxsize=None)
def existing_packages(pkgs):
    """The subset of a tuple of package names that apt knows (one apt-cache call)."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions"] + list(pkgs), capture_output=True, text=True)
    return set(re.findall(r"^Package: (\S+)$", r.stdout, re.M))


@functools.lru_cache(maxsize=None)
def needed_packages(binary):
    """-> ({package}, [unresolved soname]) for the DT_NEEDED libraries of a binary."""
    r = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True)
    sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    where = dict(re.findall(r"^\s*(\S+) => (/\S+)", r.stdout, re.M))
    pkgs, missing = set(), []
    for so in sonames:  # noqa: the result is cached, callers must not modify it
        if SANITIZER_LIB.match(so):
            continue
        path = where.get(so)
        if not path:
            missing.append(so)
            continue
        cands = [path, os.path.realpath(path)]
        for p in list(cands):
            if p.startswith("/lib"):
                cands.append("/usr" + p)
            elif p.startswith("/usr/lib"):
                cands.append(p[4:])
        owner = None
        for p in cands:
            q = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
            if q.returncode == 0:
                owner = q.stdout.split(":")[0].strip()
                break
        if owner:
            pkgs.add(owner)
        else:
            missing.append(so)
    return pkgs, missing


@functools.lru_cache(maxsize=None)
def bootstrap_dev_packages(src):
    r = subprocess.run([os.path.join(src, "scripts/bootstrap.sh"), "--list"], capture_output=True,
                       text=True, check=True)
    skip = {"libcriterion-dev", "python3-dev"}
    return {p for p in r.stdout.split() if p.endswith("-dev") and p not in skip and "clang" not in p}


def check_packages(stage_info, src, build, check_apt=True):
    v = []
    if not stage_info:
        return v
    _, stages = stage_info
    names = stage_by_name(stages)
    if check_apt:
        known = existing_packages(tuple(sorted({p for s in stages for p in apt_packages(s)})))
        for s in stages:
            for p in apt_packages(s):
                if p not in known:
                    v.append("Dockerfile: stage %s installs %s: no such package in this Debian release" % (s.name, p))
    build_stage = next((s for s in stages if s.name == "build"), None)
    if build_stage is not None:
        have = set(apt_packages(build_stage))
        for p in sorted(bootstrap_dev_packages(src) - have):
            v.append("Dockerfile: stage build lacks %s (a build dependency in scripts/bootstrap.sh)" % p)
    for stage, bins in STAGE_BINARIES.items():
        if stage not in names:
            v.append("Dockerfile: no stage %s" % stage)
            continue
        have = set()
        for s in chain(names[stage], names):
            have.update(apt_packages(s))
        for b in bins:
            path = os.path.join(build, b)
            if not os.path.exists(path):
                say_once("%s not built; the %s image's libraries are unchecked" % (path, stage))
                continue
            pkgs, missing = needed_packages(path)
            for so in missing:
                v.append("%s: cannot tell which package provides %s" % (b, so))
            for p in sorted(pkgs - have - ESSENTIAL):
                v.append("Dockerfile: stage %s lacks %s (%s needs it)" % (stage, p, b))
            note("%s needs %s" % (b, ", ".join(sorted(pkgs)))) if (b, stage) not in _said else None
            _said.add((b, stage))
    return v


# --------------------------------------------------------------------------------------------
# settings: every OUTPOST_* variable the compose file or an image sets is one its program reads

# stage -> [(program relative to SOURCE or BUILD, env prefix of its --options or None)]
STAGE_PROGRAMS = {
    "broker": [("src", "docker/mosquitto/run-broker.sh", None), ("src", "docker/mosquitto/healthcheck.sh", None)],
    "bridge": [("build", "bridge/outpost-bridge", "OUTPOST_BRIDGE_"), ("build", "bridge/outpostctl", "OUTPOST_")],
    "device": [("src", "docker/device/entrypoint.sh", "OUTPOST_DEVICE_"), ("src", "docker/device/healthcheck.sh", None)],
    "provision": [("src", "docker/provision/entrypoint.sh", None)],
}


@functools.lru_cache(maxsize=None)
def help_names(path, prefix, agent):
    """Variables a program documents in its --help: OUTPOST_* words, and PREFIX + NAME for each
    --name option. None if the program is not built."""
    if not os.path.exists(path):
        return None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OUTPOST_DEVICE_BIN": agent}
    r = subprocess.run([path, "--help"], capture_output=True, text=True, env=env, timeout=30)
    text = r.stdout + r.stderr
    names = set(re.findall(r"\b(OUTPOST_[A-Z0-9_]*[A-Z0-9])\b", text))
    if prefix:
        for opt in re.findall(r"^\s+--([a-z][a-z0-9-]*)", text, re.M):
            if opt not in ("config", "help", "version"):
                names.add(prefix + opt.upper().replace("-", "_"))
    return frozenset(names)


def env_of(x):
    e = x.get("environment") or {}
    if isinstance(e, list):
        e = dict(i.split("=", 1) if "=" in i else (i, "") for i in e)
    return e


def check_env_names(c, stage_info, src, build):
    v = []
    if not stage_info:
        return v
    _, stages = stage_info
    names = stage_by_name(stages)
    agent = os.path.join(build, "device/outpost-device")
    known, unchecked = {}, {}
    for stage, progs in STAGE_PROGRAMS.items():
        known[stage], unchecked[stage] = set(), []
        for where, rel, prefix in progs:
            h = help_names(os.path.join(src if where == "src" else build, rel), prefix, agent)
            # the device's entrypoint documents the agent's settings by running its --help
            if h is not None and stage == "device" and prefix and not os.path.exists(agent):
                h, rel = None, "device/outpost-device"
            if h is None:
                unchecked[stage].append(prefix or "OUTPOST_")
                say_once("%s not built; the %s image's %s* settings are unchecked" % (rel, stage, prefix))
                continue
            known[stage] |= h
    uses = []  # (where, stage, variable)
    for st in stages:
        if st.name not in known:
            continue
        for s in chain(st, names):
            for n, instr, args in s.instrs:
                if instr == "ENV":
                    for var in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)=", args):
                        uses.append(("Dockerfile:%d" % n, st.name, var))
    for name, svc_ in (c.get("services") or {}).items():
        b = svc_.get("build")
        target = b.get("target") if isinstance(b, dict) else None
        if target in known:
            for var in env_of(svc_):
                uses.append(("compose: %s" % name, target, var))
    for where, stage, var in uses:
        if not var.startswith("OUTPOST_") or var in known[stage]:
            continue
        if any(var.startswith(p) for p in unchecked[stage]):
            continue
        v.append("%s: %s is not a setting of the %s image's programs (their --help)" % (where, var, stage))
    return v


# --------------------------------------------------------------------------------------------
# shell scripts

def check_shell(src):
    v = []
    scripts = []
    for d, _, files in os.walk(os.path.join(src, "docker")):
        scripts += [os.path.join(d, f) for f in files if f.endswith(".sh")]
    for s in sorted(scripts):
        rel = os.path.relpath(s, src)
        if not os.access(s, os.X_OK):
            v.append("%s: not executable" % rel)
        r = subprocess.run(["bash", "-n", s], capture_output=True, text=True)
        if r.returncode:
            v.append("%s: bash -n: %s" % (rel, r.stderr.strip()))
        with open(s) as f:
            body = f.read()
        if "set -euo pipefail" not in body:
            v.append("%s: no set -euo pipefail" % rel)
        if "--help" not in body:
            v.append("%s: no --help" % rel)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning"] + scripts, capture_output=True, text=True)
        if r.returncode:
            v.append("shellcheck:\n" + r.stdout.strip())
    else:
        v.append("shellcheck not found (scripts/bootstrap.sh installs it)")
    return v


# --------------------------------------------------------------------------------------------

def check_context(src, pats, dockerfile_stages):
    """-> (violations, set of context files)"""
    v = []
    files = context_files(src, pats)
    fileset = set(files)
    for p in files:
        if PKI_PATH.search(p) or re.match(r"^build", p):
            v.append(".dockerignore: %s is in the build context" % p)
            continue
        full = os.path.join(src, p)
        try:
            if os.path.getsize(full) < 4 << 20:
                with open(full, "rb") as f:
                    if PEM_PRIVATE.search(f.read()):
                        v.append(".dockerignore: %s holds a PEM private key and is in the build context" % p)
        except OSError:
            pass
    # Paths that must never be sent, whether or not they exist right now.
    for probe in ["var/local/pki/ca.key", "var/local/outpost.db", "build/device/outpost-device",
                  "build-asan/tests/tmp/pki/ca.key", "build-fuzz/x", "certs/out/ca.key",
                  "ca.key", "some/deep/dir/device-0001.key", "x/y/crl.pem", "x/bridge.crt",
                  "docker/.env", ".git/config"]:
        if not ignored(pats, probe):
            v.append(".dockerignore: %s would be in the build context" % probe)
    for need in ["CMakeLists.txt", "proto/outpost.proto", "device/main.c", "broker/outpost_auth.c",
                 "scripts/provision-certs.sh", "certs/openssl.cnf", "docker/mosquitto/run-broker.sh",
                 "docker/mosquitto/mosquitto.conf", "docker/mosquitto/acl"]:
        if ignored(pats, need):
            v.append(".dockerignore: excludes %s, which the images need" % need)
    return v, fileset


def run_checks(src, build, compose_dict, dockerfile_text, ignore_text, check_apt=True, check_bins=True):
    """All checks but the schema one on given inputs -> violations."""
    pats = ignore_patterns(ignore_text)
    v, ctx = check_context(src, pats, None)
    targets = sorted({(s.get("build") or {}).get("target") for s in (compose_dict.get("services") or {}).values()
                      if isinstance(s.get("build"), dict) and s["build"].get("target")})
    dv, stage_info = check_dockerfile(dockerfile_text, src, ctx, targets)
    v += dv
    v += check_compose(compose_dict, stage_info)
    if check_bins:
        v += check_packages(stage_info, src, build, check_apt)
        v += check_env_names(compose_dict, stage_info, src, build)
    return v


# --------------------------------------------------------------------------------------------
# self-test: every broken copy must be rejected

def svc(c, name):
    return c["services"][name]


def mutations():
    """(description, (kind, change), expected substring of a violation[, what it needs: a build
    product relative to the build tree, or "apt"])"""
    def C(f):
        return ("compose", f)

    def D(f):
        return ("dockerfile", f)

    def I(f):
        return ("ignore", f)

    def add_vol(name, vol):
        def f(c):
            svc(c, name).setdefault("volumes", []).append(vol)
        return f

    def setk(name, key, val):
        def f(c):
            svc(c, name)[key] = val
        return f

    def stage_append(stage, line):
        def f(t):
            # append at the end of the stage: before the next FROM, or at the end of the file
            m = re.search(r"^FROM .* AS %s$" % stage, t, re.M)
            nxt = re.search(r"^FROM ", t[m.end():], re.M)
            at = m.end() + nxt.start() if nxt else len(t)
            return t[:at].rstrip("\n") + "\n" + line + "\n\n" + t[at:]
        return f

    return [
        ("bridge publishes the internal port", C(lambda c: svc(c, "bridge").__setitem__("ports", ["8884:8884"])), "only the broker"),
        ("broker also publishes 8884", C(lambda c: svc(c, "broker")["ports"].append("8884:8884")), "exactly 443"),
        ("broker publishes 443 on host port 8443", C(lambda c: svc(c, "broker").__setitem__("ports", [{"published": 8443, "target": 443}, "8883:8883"])), "exactly 443"),
        ("device publishes a random port", C(lambda c: svc(c, "device").__setitem__("ports", ["443"])), "only the broker"),
        ("device image pulled before it is built", C(lambda c: svc(c, "device").pop("pull_policy")), "pull_policy"),
        ("device privileged", C(setk("device", "privileged", True)), "privileged"),
        ("device on the host network", C(setk("device", "network_mode", "host")), "network_mode"),
        ("bridge shares the host pid namespace", C(setk("bridge", "pid", "host")), "pid"),
        ("broker gets NET_ADMIN", C(setk("broker", "cap_add", ["NET_ADMIN"])), "cap_add"),
        ("broker keeps its capabilities", C(lambda c: svc(c, "broker").pop("cap_drop")), "cap_drop"),
        ("device runs as root", C(setk("device", "user", "root")), "user root"),
        ("broker PKI mounted read-write", C(lambda c: svc(c, "broker").__setitem__("volumes", [m.replace(":ro", ":rw") for m in svc(c, "broker")["volumes"]])), "read-write"),
        ("CA volume mounted in the bridge", C(add_vol("bridge", "pki:/var/lib/outpost/ca:ro")), "CA volume"),
        ("device mounts the bridge's keys", C(add_vol("device", "bridge-pki:/etc/outpost/bridge:ro")), "another role"),
        ("docker socket bind-mounted", C(add_vol("bridge", "/var/run/docker.sock:/var/run/docker.sock")), "bind mount"),
        ("bridge never restarts", C(lambda c: svc(c, "bridge").pop("restart")), "unless-stopped"),
        ("device without health check", C(lambda c: svc(c, "device").__setitem__("healthcheck", {"disable": True})), "no health check"),
        ("provision restarts forever", C(setk("provision", "restart", "always")), "one-shot"),
        ("provision on a network", C(lambda c: svc(c, "provision").pop("network_mode")), "no network"),
        ("bridge does not wait for the PKI", C(lambda c: svc(c, "bridge")["depends_on"].pop("provision")), "wait for provision"),
        ("device has a fixed container name", C(setk("device", "container_name", "device")), "--scale"),
        ("device on the backend network", C(lambda c: svc(c, "device").__setitem__("networks", {"field": None, "backend": None})), "internal listener"),
        ("backend network routable", C(lambda c: c["networks"]["backend"].pop("internal")), "internal: true"),
        ("internal listener on loopback", C(lambda c: svc(c, "broker")["environment"].__setitem__("OUTPOST_INTERNAL_BIND", "127.0.0.1")), "cannot reach"),
        ("health check command not in the image", C(lambda c: svc(c, "device")["healthcheck"].__setitem__("test", ["CMD", "/usr/bin/outpost-health"])), "not in image"),
        ("build target that is not a stage", C(lambda c: svc(c, "device")["build"].__setitem__("target", "devices")), "not a final stage"),
        ("a key copied into the device image", D(stage_append("device", "COPY var/local/pki/devices/device-0001.key /etc/outpost/device.key")), "PKI material"),
        ("PKI directory added to the bridge image", D(stage_append("bridge", "ADD certs/ /etc/outpost/pki/")), "ADD"),
        ("the whole context in the device image", D(stage_append("device", "COPY . /src")), "whole context"),
        ("a key copied from the build stage", D(stage_append("broker", "COPY --from=build /src/var/pki/broker.key /etc/outpost/")), "PKI material"),
        ("bridge stage without USER", D(lambda t: re.sub(r"(FROM runtime AS bridge\n(?:(?!^FROM ).*\n)*?)USER outpost\n", r"\1", t, flags=re.M)), "no USER"),
        ("device stage switches back to root", D(stage_append("device", "USER root")), "is root"),
        ("USER that does not exist", D(stage_append("provision", "USER nobody2")), "never created"),
        ("base image not bookworm", D(lambda t: t.replace("debian:bookworm-slim", "debian:bullseye-slim")), "not Debian bookworm"),
        ("RUN that does not parse", D(stage_append("device", "RUN if true; then echo x")), "does not parse"),
        ("apt lists left in a layer", D(stage_append("provision", "RUN apt-get update && apt-get install -y --no-install-recommends curl")), "apt lists"),
        ("a password in ENV", D(stage_append("bridge", "ENV PGPASSWORD=outpost")), "secrets"),
        ("entrypoint not copied in", D(lambda t: t.replace("COPY docker/device/entrypoint.sh docker/device/healthcheck.sh", "COPY docker/device/healthcheck.sh")), "no COPY"),
        ("script the health check runs not copied in", D(lambda t: t.replace(" docker/mosquitto/listening.sh", "")), "runs /usr/share/outpost/docker/mosquitto/listening.sh"),
        ("script the entrypoint runs not copied in", D(lambda t: t.replace("COPY scripts/provision-certs.sh /usr/share/outpost/scripts/\n", "")), "runs /usr/share/outpost/scripts/provision-certs.sh"),
        ("script copied outside the mirror layout", D(lambda t: t.replace("COPY certs/openssl.cnf /usr/share/outpost/certs/", "COPY certs/openssl.cnf /usr/share/outpost/")), "mirror"),
        ("COPY of a file the context lacks", D(stage_append("device", "COPY docs/DEVICE.md /usr/share/doc/outpost/")), "not in the build context"),
        ("internal port EXPOSEd", D(lambda t: t.replace("EXPOSE 443 8883", "EXPOSE 443 8883 8884")), "EXPOSE 8884"),
        ("shell-form ENTRYPOINT", D(stage_append("broker", "ENTRYPOINT /usr/share/outpost/docker/mosquitto/run-broker.sh")), "shell form"),
        (".dockerignore keeps keys", I(lambda t: t.replace("**/*.key\n", "")), ".key"),
        (".dockerignore keeps var/", I(lambda t: t.replace("var/\n", "")), "var/local"),
        (".dockerignore keeps build trees", I(lambda t: t.replace("build*\n", "")), "build"),
        (".dockerignore re-includes a key", I(lambda t: t + "!var/local/pki/ca.key\n"), "ca.key"),
        (".dockerignore excludes a needed source", I(lambda t: t + "scripts/\n"), "scripts/provision-certs.sh"),
        ("misspelt device setting", C(lambda c: svc(c, "device")["environment"].__setitem__("OUTPOST_DEVICE_SAMPEL_INTERVAL", "10s")), "SAMPEL", "device/outpost-device"),
        ("broker variable run-broker.sh does not read", C(lambda c: svc(c, "broker")["environment"].__setitem__("OUTPOST_INTERNAL_ADDRESS", "x")), "INTERNAL_ADDRESS"),
        ("image sets an unknown provision variable", D(stage_append("provision", "ENV OUTPOST_DEVICE_COUNT=10")), "DEVICE_COUNT"),
        ("misspelt bridge setting", C(lambda c: svc(c, "bridge")["environment"].__setitem__("OUTPOST_BRIDGE_BROKER_HOSTNAME", "x")), "BROKER_HOSTNAME", "bridge/outpost-bridge"),
        ("device image without wolfSSL", D(lambda t: t.replace("libpaho-mqtt1.3 libprotobuf-c1 libwolfssl35", "libpaho-mqtt1.3 libprotobuf-c1")), "libwolfssl35", "device/outpost-device"),
        ("bridge image without libpq", D(lambda t: t.replace("libsqlite3-0 libpq5", "libsqlite3-0")), "libpq5", "bridge/outpost-bridge"),
        ("a package that does not exist", D(lambda t: t.replace("openssl \\", "openssl-tools \\")), "no such package", "apt"),
    ]


def self_test(src, build, compose_dict, dockerfile_text, ignore_text, compose_file, have_apt):
    failures = []
    base_v = run_checks(src, build, compose_dict, dockerfile_text, ignore_text, have_apt)
    if base_v:
        return ["self-test: the unmodified inputs already fail"]
    for desc, (kind, f), expect, *needs in mutations():
        c, d, i = copy.deepcopy(compose_dict), dockerfile_text, ignore_text
        if kind == "compose":
            f(c)
        elif kind == "dockerfile":
            d = f(d)
            if d == dockerfile_text:
                failures.append("self-test: '%s' did not change the Dockerfile (stale mutation)" % desc)
                continue
        elif kind == "ignore":
            i = f(i)
        need = needs[0] if needs else None
        if need == "apt" and not have_apt or need not in (None, "apt") and not os.path.exists(os.path.join(build, need)):
            say_once("self-test '%s' skipped (needs %s)" % (desc, "apt package lists" if need == "apt" else os.path.join(build, need)))
            continue
        v = run_checks(src, build, c, d, i, have_apt)
        hit = [x for x in v if expect in x]
        if not hit:
            failures.append("self-test: broken copy not rejected: %s (expected a violation mentioning '%s'; got %s)" % (desc, expect, v or "none"))
        else:
            note("rejected as expected: %s -> %s" % (desc, hit[0].splitlines()[0]))
    # The schema check itself: docker-compose must refuse a malformed file.
    with tempfile.TemporaryDirectory(prefix="check-docker-") as tmp:
        os.makedirs(os.path.join(tmp, "docker"))
        with open(compose_file) as fsrc:
            text = fsrc.read()
        for desc, broken, expect in [
            ("misspelt key", text.replace("    healthcheck:\n", "    healthckeck:\n", 1), "healthckeck"),
            ("ports as a mapping", text.replace('    ports:\n      - "443:443"\n      - "8883:8883"\n', "    ports:\n      443: 443\n"), "ports"),
            ("unknown dependency condition", text.replace("condition: service_healthy", "condition: service_ready", 1), "condition"),
        ]:
            if broken == text:
                failures.append("self-test: schema mutation '%s' did not apply (stale mutation)" % desc)
                continue
            path = os.path.join(tmp, "docker", "docker-compose.yml")
            with open(path, "w") as fdst:
                fdst.write(broken)
            rc, _, err = compose_config(path)
            if rc == 0 or expect not in err:
                failures.append("self-test: docker-compose config accepted a broken file (%s): rc %d %s" % (desc, rc, err.strip()))
            else:
                note("docker-compose config rejects: %s" % desc)
    return failures


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--source", default=os.path.normpath(os.path.join(here, "../..")), help="repository root")
    ap.add_argument("--build", default=None, help="build tree with the binaries [SOURCE/build]")
    ap.add_argument("--no-self-test", action="store_true", help="skip the broken-copy self-test")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.verbose
    src = os.path.abspath(a.source)
    build = os.path.abspath(a.build or os.path.join(src, "build"))
    for tool in ("docker-compose", "readelf", "dpkg", "apt-cache", "sh", "bash"):
        if not shutil.which(tool):
            print("check_docker: %s not found (scripts/bootstrap.sh installs what is needed)" % tool, file=sys.stderr)
            return 2
    compose_file = os.path.join(src, "docker/docker-compose.yml")
    with open(os.path.join(src, "docker/Dockerfile")) as f:
        dockerfile_text = f.read()
    with open(os.path.join(src, ".dockerignore")) as f:
        ignore_text = f.read()

    failures = []
    rc, out, err = compose_config(compose_file)
    if rc != 0:
        print("FAIL schema: docker-compose config rejects docker/docker-compose.yml:\n" + err)
        return 1
    print("ok   schema: docker-compose config accepts docker/docker-compose.yml")
    resolved = yaml.safe_load(out)
    with open(compose_file) as f:
        raw = yaml.safe_load(f)
    if sorted(raw.get("services", {})) != sorted(resolved.get("services", {})):
        failures.append("compose: services differ between the file and docker-compose config")

    have_apt = apt_available()
    if not have_apt:
        say_once("no apt package lists (apt-get update); package names unchecked")
    sections = [
        ("compose/dockerfile/context/packages", run_checks(src, build, resolved, dockerfile_text, ignore_text, have_apt)),
        ("compose (as written, before docker-compose normalises it)", check_compose(raw, parse_dockerfile(dockerfile_text))),
        ("shell", check_shell(src)),
    ]
    for name, v in sections:
        if v:
            failures += v
        else:
            print("ok   %s" % name)
    if not a.no_self_test:
        st = self_test(src, build, resolved, dockerfile_text, ignore_text, compose_file, have_apt)
        if st:
            failures += st
        else:
            print("ok   self-test: %d broken copies rejected" % (len(mutations()) + 3))
    if failures:
        for x in failures:
            print("FAIL " + x)
        return 1
    print("check_docker: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
