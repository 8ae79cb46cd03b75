#!/usr/bin/env python3
"""Load benchmark of simple-oauth2: builds the release binary, runs it on a fresh
temporary database, measures it with wrk over loopback, prints a Markdown table, and
writes it with the raw numbers (JSON) and a chart (SVG) beside --out.

Usage: python3 bench/run.py [--rounds 3] [--seconds 5] [--out bench/results.json]
       python3 bench/run.py --report-only     (the table and chart of the last run)

Needs wrk (Debian: apt-get install wrk). Throttling is switched off through its settings,
and request logging is turned down, for the duration of the run. Every number is the
median over the rounds. Stops by itself after a few minutes.

The same run measures PostgreSQL too, when a server answers at BENCH_POSTGRES_URL
(default postgres://postgres@127.0.0.1:5432/test; the user must be allowed to create
databases): one replica, then two replicas on one database with the load split between
them round-robin (two wrk processes, half the connections each).

DPoP (RFC 9449): GET /users/me with a DPoP-bound token, each request with a proof of its
own (ES256, signed beforehand with the `cryptography` package, which
requests-oauth2client brings; the row is left out without it). A proof is good once, so
the run signs enough for DPOP_PROOFS_PER_SECOND requests a second; a faster server would
run out and count the replays as errors.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEILING = os.path.join(ROOT, "target", "release", "examples", "ceiling")
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
BINARY = os.path.join(ROOT, "target", "release", "simple-oauth2")

# A light probe, like a few users: each connection sends a request every 10 ms.
PROBE_LUA = """
function delay()
   return 10
end
"""

LOGIN_LUA = """
wrk.method = "POST"
wrk.body = "grant_type=password&username=johndoe&password=secret"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""

# Introspection as a resource server calls it: a registered client with HTTP Basic, a
# live access token in the form.
INTROSPECT_LUA = """
wrk.method = "POST"
wrk.body = "token=__TOKEN__"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic __BASIC__"
"""

# Refresh grants: each thread starts with its share of sessions (one login per
# connection, made before the run) and keeps refreshing with the refresh token each
# answer returns. Should a session get lost, the connection logs in again (and that
# shows in the rate).
REFRESH_LUA = """
local shares = {__SHARES__}
local started = 0
local form = {["Content-Type"] = "application/x-www-form-urlencoded"}

function setup(thread)
   started = started + 1
   thread:set("share", started)
end

function init(args)
   tokens = {}
   for _, token in ipairs(shares[share]) do
      table.insert(tokens, token)
   end
end

function request()
   local token = table.remove(tokens)
   if token == nil then
      return wrk.format("POST", "/token", form,
                        "grant_type=password&username=johndoe&password=secret")
   end
   return wrk.format("POST", "/token", form, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
   local token = body:match('"refresh_token":"([^"]+)"')
   if token then
      table.insert(tokens, token)
   end
end
"""


# The user behind the bearer tokens of the read loads: not johndoe, whose login floods
# would end the oldest of his sessions (MAX_SESSIONS_PER_USER) and revoke their tokens.
READER = "reader"
READER_PASSWORD = "reader-password"


# Proofs signed per second of a DPoP run: above what 2 cores can verify, so none is reused.
DPOP_PROOFS_PER_SECOND = 30_000

# Each wrk thread takes its share of the signed proofs, one per request.
DPOP_LUA = """
local proofs = {}
local next_proof = 1
local threads = 0

function setup(thread)
   thread:set("id", threads)
   threads = threads + 1
end

function init(args)
   local i = 0
   for line in io.lines("%(proofs)s") do
      if i %% %(threads)d == id then
         proofs[#proofs + 1] = line
      end
      i = i + 1
   end
end

function request()
   -- Past the last proof, the last one again: refused as a replay, counted as an error.
   wrk.headers["DPoP"] = proofs[math.min(next_proof, #proofs)]
   next_proof = next_proof + 1
   return wrk.format(nil)
end
"""


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DpopKey:
    """An ES256 key making DPoP proofs, as a client would."""

    def __init__(self):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        public = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64url(public.x.to_bytes(32, "big")),
               "y": b64url(public.y.to_bytes(32, "big"))}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
        self.header = b64url(json.dumps(header, separators=(",", ":")).encode())

    def proof(self, method, url, token=None):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        claims = {"jti": b64url(os.urandom(16)), "htm": method, "htu": url,
                  "iat": int(time.time())}
        if token:
            claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        message = self.header + "." + b64url(json.dumps(claims, separators=(",", ":")).encode())
        r, s = decode_dss_signature(self.key.sign(message.encode(), ec.ECDSA(hashes.SHA256())))
        return message + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def dpop_available():
    try:
        import cryptography  # noqa: F401
    except ImportError:
        print("DPoP row skipped: python3 cannot import cryptography "
              "(pip install requests-oauth2client)", file=sys.stderr)
        return False
    return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output):
    """Requests/s, p50 and p99 in ms, and the count of failed requests."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    pct = {
        p: to_ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    }
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50_ms": pct.get("50"), "p99_ms": pct.get("99"), "errors": errors}


def wrk(url, connections, seconds, header=None, script=None, threads=2):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "--timeout", "10s"]
    if header:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_wrk(*args, **kwargs):
    out, _ = wrk(*args, **kwargs).communicate()
    return parse_wrk(out)


def run_wrk_split(urls, connections, seconds, **kwargs):
    """The load split evenly over several replicas at once, as a round-robin balancer
    would: requests/s and errors add up; the latencies are the worst replica's."""
    runs = [wrk(url, connections // len(urls), seconds, **kwargs) for url in urls]
    results = [parse_wrk(run.communicate()[0]) for run in runs]
    return {
        "rps": sum(r["rps"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
    }


def psql(database_url, sql):
    return subprocess.run(["psql", database_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                          capture_output=True, text=True)


def postgres_database():
    """A fresh database on the PostgreSQL server, or None when there is none."""
    if not shutil.which("psql") or psql(POSTGRES_URL, "select 1").returncode != 0:
        return None
    name = f"simple_oauth2_bench_{os.getpid()}"
    psql(POSTGRES_URL, f"drop database if exists {name}")
    if psql(POSTGRES_URL, f"create database {name}").returncode != 0:
        return None
    return name, POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(name):
    psql(POSTGRES_URL, f"drop database if exists {name} with (force)")


def memory_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_memory(pid):
    # Linux: writing 5 to clear_refs resets VmHWM (the peak resident set) to the current RSS.
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Server:
    """The service with throttling off; `quiet` turns logging down to warnings, otherwise
    it runs with the default log settings, its log going to a file as it would in use.
    `metrics` serves the metrics on a port of their own, which a `Scraper` then reads."""

    def __init__(self, database_url, port, quiet=True, program=BINARY, ready_path="/health",
                 metrics=False, env_extra=None, log_path=None):
        self.port = port
        self.database_url = database_url
        self.base = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        env = dict(
            os.environ,
            DATABASE_URL=database_url,
            HOST="127.0.0.1",
            PORT=str(port),
            LOGIN_MAX_FAILURES="0",
            LOGIN_MAX_FAILURES_PER_ADDRESS="0",
        )
        env.pop("RUST_LOG", None)
        env.pop("METRICS_ADDR", None)
        if quiet:
            env["RUST_LOG"] = "warn"
        self.metrics_url = None
        if metrics:
            metrics_port = free_port()
            env["METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
            self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env.update(env_extra or {})
        self.env = env
        self.log = open(log_path, "wb") if log_path else tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([program], env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.first_answer_ms = self._wait_until_up()

    def _wait_until_up(self):
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(self.base + self.ready_path, timeout=1) as r:
                    if r.status == 200:
                        return (time.perf_counter() - self.started) * 1000
            except OSError:
                time.sleep(0.002)
        raise SystemExit("the server did not answer within 30 s")

    def login(self, field="access_token", username=READER, password=READER_PASSWORD,
              dpop_key=None):
        """A new session; by default the reader's, whose sessions the login floods (as
        johndoe) cannot end by MAX_SESSIONS_PER_USER. Bound to `dpop_key` when given."""
        data = urllib.parse.urlencode({"username": username, "password": password}).encode()
        request = urllib.request.Request(self.base + "/token", data=data)
        if dpop_key:
            request.add_header("DPoP", dpop_key.proof("POST", self.base + "/token"))
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.load(r)[field]

    def add_reader(self):
        """The user whose tokens the /users/me and introspection loads use."""
        subprocess.run([BINARY, "users", "add", READER, "--password-stdin"], env=self.env,
                       input=READER_PASSWORD + "\n", capture_output=True, text=True, check=True)

    def add_client(self, client_id):
        """Registers a client on the CLI, as an operator would; returns its secret."""
        out = subprocess.run([BINARY, "clients", "add", client_id], env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Scraper:
    """Reads the metrics every second while in use, as a (busy) Prometheus would."""

    def __init__(self, url):
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.scrapes = 0

    def _run(self):
        while not self.stop.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as r:
                r.read()
            self.scrapes += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def probe_during(url, seconds, workdir, flood_url, flood_script=None, header=None):
    """The light probe's latencies on `url`, alone and while 32 connections flood
    `flood_url`."""
    probe = os.path.join(workdir, "probe.lua")
    with open(probe, "w") as f:
        f.write(PROBE_LUA)
    idle = run_wrk(url, 4, seconds, header=header, script=probe, threads=1)
    flood = wrk(flood_url, 32, seconds + 2, script=flood_script)
    time.sleep(1)
    during = run_wrk(url, 4, seconds, header=header, script=probe, threads=1)
    flood_result = parse_wrk(flood.communicate()[0])
    return idle, during, flood_result


def ceiling_round(ceiling, seconds, workdir):
    """The machine's HTTP ceiling: a bare poem server answering a constant."""
    result = {"ceiling_c64": run_wrk(ceiling.base + "/", 64, seconds)}
    idle, during, _ = probe_during(ceiling.base + "/", seconds, workdir, ceiling.base + "/")
    result["ceiling_probe_idle"] = idle
    result["ceiling_probe_flood"] = during
    return result


def against_ceiling(result, key, ceiling, url, seconds, header):
    """64 connections on `url`, right after the same on the ceiling (as `ceiling_for_<key>`):
    this machine's speed drifts by a fifth within minutes, so each ratio compares
    neighbours."""
    result["ceiling_for_" + key] = run_wrk(ceiling.base + "/", 64, seconds)
    result[key] = run_wrk(url, 64, seconds, header=header)


def introspect_script(server, token, workdir):
    secret = server.add_client("bench")
    basic = base64.b64encode(f"bench:{secret}".encode()).decode()
    path = os.path.join(workdir, "introspect.lua")
    with open(path, "w") as f:
        f.write(INTROSPECT_LUA.replace("__TOKEN__", token).replace("__BASIC__", basic))
    return path


def refresh_script(server, connections, workdir, threads=2):
    """One login per connection, made now, shared out over wrk's threads."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda _: server.login("refresh_token", "johndoe", "secret"),
                               range(connections)))
    shares = [tokens[i::threads] for i in range(threads)]
    lua_shares = ", ".join("{" + ", ".join(f'"{t}"' for t in share) + "}" for share in shares)
    path = os.path.join(workdir, "refresh.lua")
    with open(path, "w") as f:
        f.write(REFRESH_LUA.replace("__SHARES__", lua_shares))
    return path


def one_round(seconds, workdir):
    db = os.path.join(workdir, "bench.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    # Create and migrate the database, then time a launch on the existing file.
    created = Server(f"sqlite:{db}", free_port())
    created.add_reader()
    created.stop()
    ceiling = Server("unused", free_port(), program=CEILING, ready_path="/")
    try:
        result = ceiling_round(ceiling, seconds, workdir)
        result.update(service_rounds(db, ceiling, seconds, workdir))
    finally:
        ceiling.stop()
    return result


def service_rounds(db, ceiling, seconds, workdir):
    result = {}
    script = os.path.join(workdir, "login.lua")
    with open(script, "w") as f:
        f.write(LOGIN_LUA)
    # The default settings, as people run it.
    server = Server(f"sqlite:{db}", free_port(), quiet=False)
    try:
        auth = f"Authorization: Bearer {server.login()}"
        me = server.base + "/users/me"
        against_ceiling(result, "default_me_c64", ceiling, me, seconds, auth)
        idle, during, flood = probe_during(me, seconds, workdir, server.base + "/token",
                                           flood_script=script, header=auth)
        result["default_probe_idle"] = idle
        result["default_probe_flood"] = during
        result["default_login_flood_c32"] = flood
    finally:
        server.stop()
    # The same with the metrics served and scraped (issue: metrics must not cost the goals).
    server = Server(f"sqlite:{db}", free_port(), quiet=False, metrics=True)
    try:
        auth = f"Authorization: Bearer {server.login()}"
        me = server.base + "/users/me"
        with Scraper(server.metrics_url):
            against_ceiling(result, "metrics_me_c64", ceiling, me, seconds, auth)
            _, during, _ = probe_during(me, seconds, workdir, server.base + "/token",
                                        flood_script=script, header=auth)
        result["metrics_probe_flood"] = during
    finally:
        server.stop()
    server = Server(f"sqlite:{db}", free_port())
    result["launch_to_first_answer_ms"] = server.first_answer_ms
    try:
        pid = server.proc.pid
        token = server.login()
        auth = f"Authorization: Bearer {token}"
        me = server.base + "/users/me"
        time.sleep(0.5)
        result["idle_rss_mib"] = memory_kib(pid, "VmRSS") / 1024
        result["me_c16"] = run_wrk(me, 16, seconds, header=auth)
        against_ceiling(result, "me_c64", ceiling, me, seconds, auth)
        result["me_c256"] = run_wrk(me, 256, seconds, header=auth)
        if dpop_available():
            result["me_dpop_c64"] = dpop_round(server, me, seconds, workdir)
        result["token_c16"] = run_wrk(server.base + "/token", 16, seconds, script=script)
        result["me_idle_c16"] = run_wrk(me, 16, seconds, header=auth)
        peak_reset = reset_peak_memory(pid)
        flood = wrk(server.base + "/token", 32, seconds + 2, script=script)
        time.sleep(1)
        result["me_during_flood_c16"] = run_wrk(me, 16, seconds, header=auth)
        result["login_flood_c32"] = parse_wrk(flood.communicate()[0])
        result["flood_peak_rss_mib"] = memory_kib(pid, "VmHWM") / 1024 if peak_reset else None
        # Introspection right after /users/me on the same server: side by side. A fresh
        # login: the floods above ended the oldest sessions (MAX_SESSIONS_PER_USER).
        token = server.login()
        auth = f"Authorization: Bearer {token}"
        introspect = introspect_script(server, token, workdir)
        result["me_for_introspect_c64"] = run_wrk(me, 64, seconds, header=auth)
        result["introspect_c64"] = run_wrk(server.base + "/token/introspect", 64, seconds,
                                           script=introspect)
        result["refresh_c16"] = run_wrk(server.base + "/token", 16, seconds,
                                        script=refresh_script(server, 16, workdir))
    finally:
        server.stop()
    result.update(postgres_round(seconds, script, ceiling, workdir))
    return result


def dpop_round(server, me, seconds, workdir, connections=64, threads=2):
    """GET /users/me with a DPoP-bound token and a fresh proof per request. The proofs
    are signed just before the run, well within DPOP_PROOF_MAX_AGE."""
    key = DpopKey()
    token = server.login(dpop_key=key)
    proofs = os.path.join(workdir, "dpop-proofs.txt")
    with open(proofs, "w") as f:
        for _ in range(DPOP_PROOFS_PER_SECOND * seconds):
            f.write(key.proof("GET", me, token) + "\n")
    script = os.path.join(workdir, "dpop.lua")
    with open(script, "w") as f:
        f.write(DPOP_LUA % {"proofs": proofs, "threads": threads})
    return run_wrk(me, connections, seconds, header=f"Authorization: DPoP {token}",
                   script=script, threads=threads)


def postgres_round(seconds, login_script, ceiling, workdir):
    """The same loads on PostgreSQL: one replica, then two sharing the database."""
    database = postgres_database()
    if database is None:
        print(f"PostgreSQL rows skipped: no server at {POSTGRES_URL}", file=sys.stderr)
        return {}
    name, url = database
    replicas = []
    result = {}
    try:
        replicas.append(Server(url, free_port()))
        replicas[0].add_reader()
        token = replicas[0].login()
        auth = f"Authorization: Bearer {token}"
        # Warm-up, not measured: right after the database was created, the first seconds
        # of load measured a fifth under the same server's a minute later.
        run_wrk(replicas[0].base + "/users/me", 64, 2, header=auth)
        against_ceiling(result, "pg1_me_c64", ceiling, replicas[0].base + "/users/me", seconds,
                        auth)
        result["pg1_token_c16"] = run_wrk(replicas[0].base + "/token", 16, seconds, script=login_script)
        token = replicas[0].login()
        auth = f"Authorization: Bearer {token}"
        introspect = introspect_script(replicas[0], token, workdir)
        result["pg1_me_for_introspect_c64"] = run_wrk(replicas[0].base + "/users/me", 64,
                                                      seconds, header=auth)
        result["pg1_introspect_c64"] = run_wrk(replicas[0].base + "/token/introspect", 64,
                                               seconds, script=introspect)
        result["pg1_refresh_c16"] = run_wrk(replicas[0].base + "/token", 16, seconds,
                                            script=refresh_script(replicas[0], 16, workdir))
        replicas.append(Server(url, free_port()))
        bases = [r.base for r in replicas]
        result["pg2_me_c64"] = run_wrk_split([b + "/users/me" for b in bases], 64, seconds, header=auth)
        result["pg2_token_c16"] = run_wrk_split([b + "/token" for b in bases], 16, seconds,
                                                script=login_script)
    finally:
        for replica in replicas:
            replica.stop()
        drop_postgres_database(name)
    return result


# The backlog housekeeping meets after downtime or a busy day: this many users, each with
# one live access token, and twice as many expired tokens; `--scale` multiplies them.
SCALE_USERS = 1_000_000
DAY_MS = 86_400_000


def build_sqlite_backlog(db, users):
    """Rows in bulk, generated by SQL (a recursive CTE) on a migrated file."""
    import sqlite3
    con = sqlite3.connect(db)
    con.execute("pragma journal_mode = wal")
    con.execute("pragma synchronous = off")
    now = int(time.time() * 1000)
    with con:
        con.execute(f"""
            with recursive n(i) as (select 1 union all select i + 1 from n where i < {users})
            insert into users (username, hashed_password, scopes)
            select 'user' || i, (select hashed_password from users where username = 'johndoe'),
                   'me'
            from n""")
    with con:
        con.execute(f"""
            insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
            select randomblob(32), id, 'me', {now}, {now + DAY_MS}
            from users where username like 'user%'""")
    with con:
        con.execute(f"""
            insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
            select randomblob(32), id, 'me', {now - 2 * DAY_MS}, {now - DAY_MS} - (k * 1000)
            from users, (select 0 as k union all select 1)
            where username like 'user%'""")
    con.close()


def build_postgres_backlog(url, users):
    """Rows in bulk, generated by SQL (generate_series)."""
    now = int(time.time() * 1000)
    sql = f"""
        insert into users (username, hashed_password, scopes)
        select 'user' || i, (select hashed_password from users where username = 'johndoe'), 'me'
        from generate_series(1, {users}) i;
        insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
        select decode(md5(id::text || 'a') || md5(id::text || 'b'), 'hex'), id, 'me',
               {now}, {now + DAY_MS}
        from users where username like 'user%';
        insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
        select decode(md5(id::text || k || 'c') || md5(id::text || k || 'd'), 'hex'), id, 'me',
               {now - 2 * DAY_MS}, {now - DAY_MS} - k * 1000
        from users, generate_series(0, 1) k where username like 'user%';
        analyze;
    """
    out = psql(url, sql)
    if out.returncode != 0:
        raise SystemExit(f"building the PostgreSQL backlog failed: {out.stderr}")


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


class PacedProbe:
    """A few users while housekeeping runs: a login every 200 ms, GET /users/me every
    10 ms, GET /health every 100 ms, each on a kept-alive connection of its own."""

    def __init__(self, base):
        self.host, self.port = base.split("//")[1].split(":")
        self.stop = threading.Event()
        self.samples = {"login": [], "me": [], "health": []}
        self.token = None

    def _call(self, conn, method, path, body=None, headers=None):
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            status = response.status
        except OSError:
            conn.close()
            status, data = 0, b""
        return status, (time.perf_counter() - started) * 1000, data

    def _loop(self, kind, every, method, path, body=None, headers=None):
        import http.client
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        next_at = time.perf_counter()
        while not self.stop.is_set():
            hdrs = dict(headers or {})
            if kind == "me":
                hdrs["Authorization"] = f"Bearer {self.token}"
            status, ms, data = self._call(conn, method, path, body, hdrs)
            self.samples[kind].append((status, ms))
            next_at += every
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def __enter__(self):
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        login = "grant_type=password&username=johndoe&password=secret"
        import http.client
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        # Another user's token for /users/me: johndoe's logins every 200 ms end his
        # oldest sessions beyond MAX_SESSIONS_PER_USER (the backlog's users share his
        # password).
        _, _, data = self._call(conn, "POST", "/token",
                                "grant_type=password&username=user1&password=secret", form)
        self.token = json.loads(data)["access_token"]
        self.threads = [
            threading.Thread(target=self._loop, args=("login", 0.2, "POST", "/token", login,
                                                      form), daemon=True),
            threading.Thread(target=self._loop, args=("me", 0.01, "GET", "/users/me"),
                             daemon=True),
            threading.Thread(target=self._loop, args=("health", 0.1, "GET", "/health"),
                             daemon=True),
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def summary(self):
        out = {}
        for kind, samples in self.samples.items():
            out[kind] = {
                "requests": len(samples),
                "non_200": sum(1 for status, _ in samples if status != 200),
                "status_503": sum(1 for status, _ in samples if status == 503),
                "p50_ms": percentile([ms for _, ms in samples], 50),
                "p99_ms": percentile([ms for _, ms in samples], 99),
                "max_ms": max((ms for _, ms in samples), default=None),
            }
        return out


def housekeeping_at_scale(backend, scale, workdir, timeout=900):
    """Builds the backlog, starts the service (its first sweep runs at start), and probes
    it until the sweep says it is done."""
    users = max(1000, int(SCALE_USERS * scale))
    name = None
    if backend == "sqlite":
        db = os.path.join(workdir, "scale.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        url = f"sqlite:{db}"
        Server(url, free_port()).stop()
    else:
        database = postgres_database()
        if database is None:
            return None
        name, url = database
        Server(url, free_port()).stop()
    built = time.perf_counter()
    try:
        if backend == "sqlite":
            build_sqlite_backlog(db, users)
        else:
            build_postgres_backlog(url, users)
        build_s = time.perf_counter() - built
        log_path = os.path.join(workdir, f"scale-{backend}.log")
        # The sweep's own line says when it is done (and how many rows went).
        server = Server(url, free_port(), log_path=log_path,
                        env_extra={"RUST_LOG": "warn,simple_oauth2::server=debug"})
        try:
            with PacedProbe(server.base) as probe:
                deadline = time.perf_counter() + timeout
                done = None
                while time.perf_counter() < deadline and done is None:
                    time.sleep(0.1)
                    with open(log_path, errors="replace") as f:
                        for line in f:
                            m = re.search(r"deleted[=: ]+(\d+)", line)
                            if "deleted dead tokens" in line and m:
                                done = int(m.group(1))
                cleared_s = time.perf_counter() - server.started
            result = probe.summary()
        finally:
            server.stop()
        result.update({
            "backend": backend,
            "users": users,
            "live_tokens": users,
            "expired_tokens": 2 * users,
            "build_s": build_s,
            "deleted": done,
            "cleared_s": cleared_s if done is not None else None,
        })
        return result
    finally:
        if name:
            drop_postgres_database(name)


def median_of(rounds, *path):
    values = []
    for r in rounds:
        v = r
        for key in path:
            v = v[key]
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None


def chart_svg(summary):
    """Two bar groups: requests/s and p99 per load, as a small self-contained SVG."""
    rows = [
        ("/users/me, 16 conn", "me_c16"),
        ("/users/me, 64 conn", "me_c64"),
        ("/users/me, 256 conn", "me_c256"),
        ("/users/me, idle (16)", "me_idle_c16"),
        ("/users/me, login flood (16)", "me_during_flood_c16"),
    ]
    med = summary["median"]
    width, bar_h, gap, left, top = 760, 18, 8, 210, 40
    max_rps = max(med[k]["rps"] for _, k in rows)
    max_p99 = max(med[k]["p99_ms"] for _, k in rows)
    half = (width - left - 40) // 2
    height = top + len(rows) * (bar_h + gap) + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-weight="bold">requests/s</text>',
        f'<text x="{left + half + 20}" y="20" font-weight="bold">p99 latency (ms)</text>',
    ]
    for i, (label, key) in enumerate(rows):
        y = top + i * (bar_h + gap)
        rps, p99 = med[key]["rps"], med[key]["p99_ms"]
        w1 = max(1, int(half * rps / max_rps))
        w2 = max(1, int(half * p99 / max_p99))
        out += [
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{label}</text>',
            f'<rect x="{left}" y="{y}" width="{w1}" height="{bar_h}" fill="#4990e2"/>',
            f'<text x="{left + 4}" y="{y + 13}" fill="white">{rps:,.0f}</text>',
            f'<rect x="{left + half + 20}" y="{y}" width="{w2}" height="{bar_h}" fill="#e27c49"/>',
            f'<text x="{left + half + 24}" y="{y + 13}">{p99:.2f}</text>',
        ]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def report(summary):
    med = summary["median"]

    def row(name, key):
        r = med[key]
        return f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']:.0f} |"

    ratios = []
    if "ceiling_c64" in med:
        def paired(key, ref, field):
            """Median over the rounds of key/ref, each round's two figures taken side by
            side (the machine's speed drifts between rounds)."""
            values = [r[key][field] / r[ref][field] for r in summary["raw_rounds"]
                      if key in r and ref in r and r[ref][field]]
            return statistics.median(values) if values else float("nan")

        def line(what, key, ref, field):
            return f"| {what} | {paired(key, ref, field):.2f}x |"

        ratios = [
            "",
            "| against the ceiling, measured just before (median of the rounds' ratios) | ratio |",
            "|---|---:|",
            line("/users/me, 64 connections, default settings: requests/s",
                 "default_me_c64", "ceiling_for_default_me_c64", "rps"),
            line("/users/me, 64 connections, default settings: p99",
                 "default_me_c64", "ceiling_for_default_me_c64", "p99_ms"),
            line("/users/me, 64 connections, quiet (RUST_LOG=warn): requests/s",
                 "me_c64", "ceiling_for_me_c64", "rps"),
            line("/users/me, 64 connections, quiet: p99", "me_c64", "ceiling_for_me_c64",
                 "p99_ms"),
            line("metrics on (served, scraped every second): /users/me, 64 connections, "
                 "requests/s", "metrics_me_c64", "ceiling_for_metrics_me_c64", "rps"),
            line("metrics on: /users/me, 64 connections, p99", "metrics_me_c64",
                 "ceiling_for_metrics_me_c64", "p99_ms"),
            line("probe p99 during a 32-connection login flood / the ceiling's probe p99 "
                 "during a 32-connection flood of GET /, default settings",
                 "default_probe_flood", "ceiling_probe_flood", "p99_ms"),
            line("the same, metrics on", "metrics_probe_flood", "ceiling_probe_flood",
                 "p99_ms"),
            line("PostgreSQL, 1 replica: /users/me, 64 connections, requests/s",
                 "pg1_me_c64", "ceiling_for_pg1_me_c64", "rps"),
            "",
            "| side by side on the same server (median of the rounds' ratios) | ratio |",
            "|---|---:|",
            line("SQLite: introspection / /users/me, requests/s", "introspect_c64",
                 "me_for_introspect_c64", "rps"),
            line("PostgreSQL: introspection / /users/me, requests/s", "pg1_introspect_c64",
                 "pg1_me_for_introspect_c64", "rps"),
        ]

    peak = summary["flood_peak_rss_mib"]
    return "\n".join([
        f"Medians of {summary['rounds']} rounds, {summary['seconds_per_point']} s per point, "
        f"wrk -t2 on the same {summary['machine']['cpus']}-core machine over loopback.",
        "",
        "| load | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *([row("ceiling: bare poem server, GET /, 64 connections", "ceiling_c64"),
           row("ceiling: probe (4 connections, 100 req/s each), idle", "ceiling_probe_idle"),
           row("ceiling: probe during a 32-connection flood of GET /", "ceiling_probe_flood"),
           row("ceiling, just before the next row", "ceiling_for_default_me_c64"),
           row("default settings: GET /users/me, 64 connections", "default_me_c64"),
           row("default settings: probe on /users/me, idle", "default_probe_idle"),
           row("default settings: probe on /users/me during a 32-connection login flood",
               "default_probe_flood"),
           row("default settings: POST /token, 32-connection login flood",
               "default_login_flood_c32"),
           row("ceiling, just before the next row", "ceiling_for_metrics_me_c64"),
           row("metrics on (METRICS_ADDR, scraped every second): GET /users/me, "
               "64 connections", "metrics_me_c64"),
           row("metrics on: probe on /users/me during a 32-connection login flood",
               "metrics_probe_flood")]
          if "ceiling_c64" in med else []),
        row("GET /users/me, 16 connections", "me_c16"),
        *([row("ceiling, just before the next row", "ceiling_for_me_c64")]
          if "ceiling_for_me_c64" in med else []),
        row("GET /users/me, 64 connections", "me_c64"),
        row("GET /users/me, 256 connections", "me_c256"),
        *([row("GET /users/me with DPoP (a fresh ES256 proof per request), 64 connections",
               "me_dpop_c64")] if "me_dpop_c64" in med else []),
        row("POST /token, 16 connections", "token_c16"),
        row("GET /users/me, 16 connections, idle", "me_idle_c16"),
        row("GET /users/me, 16 connections, during a 32-connection login flood", "me_during_flood_c16"),
        row("POST /token, 32-connection login flood", "login_flood_c32"),
        *[row(name, key) for name, key in (
            ("GET /users/me, 64 connections, just before the next row", "me_for_introspect_c64"),
            ("POST /token/introspect (registered client, HTTP Basic), 64 connections",
             "introspect_c64"),
            ("POST /token, refresh grant, 16 connections", "refresh_c16"),
            ("ceiling, just before the next row", "ceiling_for_pg1_me_c64"),
            ("PostgreSQL, 1 replica: GET /users/me, 64 connections", "pg1_me_c64"),
            ("PostgreSQL, 1 replica: POST /token, 16 connections", "pg1_token_c16"),
            ("PostgreSQL, 1 replica: GET /users/me, 64 connections, just before the next row",
             "pg1_me_for_introspect_c64"),
            ("PostgreSQL, 1 replica: POST /token/introspect, 64 connections",
             "pg1_introspect_c64"),
            ("PostgreSQL, 1 replica: POST /token, refresh grant, 16 connections",
             "pg1_refresh_c16"),
            ("PostgreSQL, 2 replicas, load split: GET /users/me, 64 connections", "pg2_me_c64"),
            ("PostgreSQL, 2 replicas, load split: POST /token, 16 connections", "pg2_token_c16"),
        ) if key in med],
        *ratios,
        "",
        "The rows without a prefix run quiet (RUST_LOG=warn). The SQLite rows run one "
        "replica on a temporary file. Both replicas of the "
        "PostgreSQL rows run on the same machine as the database and wrk, so they share "
        "its cores: two replicas show the cost of sharing one database, not twice the "
        "hardware.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| /users/me p99 during the flood / idle | {summary['flood_p99_ratio']:.2f}x |",
        f"| resident memory, idle | {summary['idle_rss_mib']:.1f} MiB |",
        "| resident memory, peak during the login flood | "
        + (f"{peak:.1f} MiB |" if peak else "n/a |"),
        f"| launch to first answer, existing database | {summary['launch_to_first_answer_ms']:.0f} ms |",
        *(housekeeping_report(summary["housekeeping"]) if summary.get("housekeeping") else []),
    ])


def measure_housekeeping(scale):
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "simple-oauth2"],
                   cwd=ROOT, check=True)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in ("sqlite", "postgres"):
            print(f"housekeeping at scale, {backend} ...", file=sys.stderr)
            result = housekeeping_at_scale(backend, scale, workdir)
            if result:
                results.append(result)
    return results


def housekeeping_report(results):
    lines = [
        "",
        "Housekeeping at scale: the first sweep after start deletes the expired backlog in "
        "batches while a paced probe runs (a login every 200 ms, GET /users/me every 10 ms, "
        "GET /health every 100 ms).",
        "",
        "| backend | users, live tokens | expired tokens | built in | backlog cleared in "
        "| 503s | not 200 (login, /users/me, /health) | login p99 ms | /users/me p99 ms "
        "| /users/me max ms | /health p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cleared = f"{r['cleared_s']:.1f} s" if r["cleared_s"] is not None else "not within the run"
        status_503 = sum(r[k]["status_503"] for k in ("login", "me", "health"))
        lines.append(
            f"| {r['backend']} | {r['users']:,} | {r['expired_tokens']:,} | {r['build_s']:.0f} s "
            f"| {cleared} | {status_503} "
            f"| {r['login']['non_200']}, {r['me']['non_200']}, {r['health']['non_200']} "
            f"| {r['login']['p99_ms']:.1f} | {r['me']['p99_ms']:.2f} | {r['me']['max_ms']:.1f} "
            f"| {r['health']['p99_ms']:.1f} |")
    return lines


def measure(args):
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "simple-oauth2",
                    "--example", "ceiling"], cwd=ROOT, check=True)

    rounds = []
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(args.rounds):
            print(f"round {i + 1} of {args.rounds} ...", file=sys.stderr)
            rounds.append(one_round(args.seconds, workdir))

    m = lambda *path: median_of(rounds, *path)  # noqa: E731
    keys = ["me_c16", "me_c64", "me_c256", "token_c16", "me_idle_c16",
            "me_during_flood_c16", "login_flood_c32", "ceiling_c64", "ceiling_probe_idle",
            "ceiling_probe_flood", "default_me_c64", "default_probe_idle",
            "default_probe_flood", "default_login_flood_c32", "metrics_me_c64",
            "metrics_probe_flood", "ceiling_for_default_me_c64", "ceiling_for_me_c64",
            "ceiling_for_metrics_me_c64"]
    keys += ["me_for_introspect_c64", "introspect_c64", "refresh_c16"]
    keys += [k for k in ("me_dpop_c64", "ceiling_for_pg1_me_c64", "pg1_me_c64", "pg1_token_c16",
                         "pg1_me_for_introspect_c64", "pg1_introspect_c64", "pg1_refresh_c16",
                         "pg2_me_c64", "pg2_token_c16")
             if all(k in r for r in rounds)]
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "kernel": platform.release(),
        },
        "rounds": args.rounds,
        "seconds_per_point": args.seconds,
        "median": {
            key: {field: m(key, field) for field in ("rps", "p50_ms", "p99_ms", "errors")}
            for key in keys
        },
        "idle_rss_mib": m("idle_rss_mib"),
        "flood_peak_rss_mib": m("flood_peak_rss_mib"),
        "launch_to_first_answer_ms": m("launch_to_first_answer_ms"),
        "raw_rounds": rounds,
    }
    med = summary["median"]
    idle, flood = med["me_idle_c16"]["p99_ms"], med["me_during_flood_c16"]["p99_ms"]
    summary["flood_p99_ratio"] = flood / idle if idle and flood else None
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="housekeeping at scale: users (and live tokens) in millions, "
                             "expired tokens twice that; 0 skips it")
    parser.add_argument("--scale-only", action="store_true",
                        help="measure only housekeeping at scale, keeping the rest of --out")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: print the table and chart of --out again")
    args = parser.parse_args()
    if args.report_only or args.scale_only:
        with open(args.out) as f:
            summary = json.load(f)
    else:
        summary = measure(args)
    if args.scale and not args.report_only:
        summary["housekeeping"] = measure_housekeeping(args.scale)
    if not args.report_only:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
    table = report(summary)
    base = os.path.splitext(args.out)[0]
    with open(base + ".md", "w") as f:
        f.write(table + "\n")
    with open(base + ".svg", "w") as f:
        f.write(chart_svg(summary))
    print(table)
    print(f"\nwritten: {os.path.relpath(base)}.{{json,md,svg}}", file=sys.stderr)


if __name__ == "__main__":
    main()
