#!/usr/bin/env python3
"""The traffic and the report of benches/soak.sh (issue 12, point 5); run by it.

Drives DURATION seconds of mixed traffic at a running `tokengate serve`:

  cached     wrk, the proxy door, the tokens in CACHED_TOKENS (always 200)
  miss       well-formed tokens with random ids: a store read each (401)
  malformed  a bad checksum, dropped before any I/O (401)
  forged     wrong secrets for a live id, each from its own X-Forwarded-For:
             bcrypt until the id's refusal limit, then 429
  one-ip     malformed tokens from one X-Forwarded-For: 401, then 429
  revoke     create a token (admin API, 201), use it (200: a miss and a
             bcrypt verification), revoke it (200), use it again (401)
  admin      create with an expiry (201), get (200), set a quota (200),
             list (200)

restarts Redis in the middle (SHUTDOWN SAVE, down RESTART_DOWN seconds,
started again with its data), samples tokengate's RSS and open file
descriptors every SAMPLE seconds, and prints the answers by kind and status,
those that were not expected, and whether RSS and fds came back within 10%
of their level after the warm-up.

Expected answers are those listed above, and 503 from the moment Redis is
stopped until WINDOW_AFTER seconds after it answers again (a cached token
is trusted for `cache.degraded_ttl`, 5 s, without the store; after that it
is checked again and gets 503 while Redis is away). Anything else, and any
connection error, is unexpected.
"""

import collections
import http.client
import json
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
import zlib

E = os.environ
DURATION = float(E["DURATION"])
WARMUP = float(E["WARMUP"])
SAMPLE = float(E["SAMPLE"])
RESTART_DOWN = float(E["RESTART_DOWN"])
WINDOW_AFTER = float(E["WINDOW_AFTER"])
TG_PID = int(E["TG_PID"])
FA = int(E["TG_FA_PORT"])
PROXY = int(E["TG_PROXY_PORT"])
ADMIN = int(E["TG_ADMIN_PORT"])
ADMIN_KEY = E["ADMIN_KEY"]
REDIS_PORT = E["REDIS_PORT"]
REDIS_START = E["REDIS_START"]
CACHED_TOKENS = E["CACHED_TOKENS"]
FORGED_ID_TOKEN = E["FORGED_ID_TOKEN"]
WRK_SCRIPT = E["WRK_SCRIPT"]
WRK_CONNECTIONS = E["WRK_CONNECTIONS"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n, width):
    out = ""
    while n:
        n, d = divmod(n, 62)
        out = ALPHABET[d] + out
    return out.rjust(width, "0")


def with_checksum(body):
    return body + base62(zlib.crc32(body.encode()), 6)


def random_secret():
    return "".join(secrets.choice(ALPHABET) for _ in range(24))


def random_ip():
    return f"198.18.{random.randint(0, 255)}.{random.randint(1, 254)}"


class Client:
    """One keep-alive connection; a failed request reconnects."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def call(self, method, path, headers=None, body=None):
        """(status or an error's name, the body as bytes)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            data = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return response.status, data
        except (OSError, http.client.HTTPException) as err:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return "error:" + type(err).__name__, b""


START = time.time()
STOP = START + DURATION
RESULTS = []  # (time, kind, status)
RESULTS_LOCK = threading.Lock()
REDIS_DOWN = None  # time Redis was stopped
REDIS_UP = None  # time Redis answered again


def record(kind, status):
    with RESULTS_LOCK:
        RESULTS.append((time.time(), kind, status))


def bearer(token, ip=None):
    headers = {"Authorization": "Bearer " + token}
    if ip:
        headers["X-Forwarded-For"] = ip
    return headers


ADMIN_HEADERS = {"Authorization": "Bearer " + ADMIN_KEY, "Content-Type": "application/json"}


def loop(pause, step):
    """Runs step() until the end, pause seconds apart."""

    def run():
        while time.time() < STOP:
            step()
            time.sleep(pause)

    return run


def miss_step(client):
    token = with_checksum("mk_" + base62(secrets.randbits(128), 22) + random_secret())
    status, _ = client.call("GET", "/miss", bearer(token, random_ip()))
    record("miss", status)


def malformed_step(client):
    token = "mk_" + base62(secrets.randbits(128), 22) + random_secret() + "000000"
    status, _ = client.call("GET", "/malformed", bearer(token, random_ip()))
    record("malformed", status)


def forged_step(client):
    token = with_checksum(FORGED_ID_TOKEN[:25] + random_secret())
    status, _ = client.call("GET", "/forged", bearer(token, random_ip()))
    record("forged", status)


def one_ip_step(client):
    token = "mk_" + base62(secrets.randbits(128), 22) + random_secret() + "000000"
    status, _ = client.call("GET", "/one-ip", bearer(token, "192.0.2.7"))
    record("one-ip", status)


def create(admin, account, body):
    status, data = admin.call(
        "POST", f"/v1/accounts/{account}/tokens", ADMIN_HEADERS, json.dumps(body).encode()
    )
    if status != 201:
        return status, None
    created = json.loads(data)
    return status, created


def revoke_step(admin, gate):
    account = f"soak-{random.randint(0, 99)}"
    status, created = create(admin, account, {"name": "soak revoke"})
    record("revoke:create", status)
    if created is None:
        return
    token, token_id = created["token"], created["id"]
    # A client of its own: its refusal must not count against another's
    # failure limit (all of them come from loopback, a trusted proxy).
    ip = random_ip()
    status, _ = gate.call("GET", "/revoke", bearer(token, ip))
    record("revoke:use", status)
    status, _ = admin.call("DELETE", f"/v1/accounts/{account}/tokens/{token_id}", ADMIN_HEADERS)
    record("revoke:revoke", status)
    if status != 200:
        return
    status, _ = gate.call("GET", "/revoked", bearer(token, ip))
    record("revoke:use-revoked", status)


def admin_step(admin):
    account = f"soak-admin-{random.randint(0, 99)}"
    status, created = create(admin, account, {"name": "soak admin", "expires_in_days": 1})
    record("admin:create", status)
    if created is None:
        return
    token_id = created["id"]
    path = f"/v1/accounts/{account}/tokens/{token_id}"
    status, _ = admin.call("GET", path, ADMIN_HEADERS)
    record("admin:get", status)
    status, _ = admin.call(
        "PUT", path + "/quota", ADMIN_HEADERS, json.dumps({"remaining": 1000}).encode()
    )
    record("admin:quota", status)
    status, _ = admin.call("GET", f"/v1/accounts/{account}/tokens", ADMIN_HEADERS)
    record("admin:list", status)


EXPECTED = {
    "miss": {401},
    "malformed": {401},
    "forged": {401, 429},
    "one-ip": {401, 429},
    "revoke:create": {201},
    "revoke:use": {200},
    "revoke:revoke": {200},
    "revoke:use-revoked": {401},
    "admin:create": {201},
    "admin:get": {200},
    "admin:quota": {200},
    "admin:list": {200},
    "cached": {200},
}


def in_redis_window(t0, t1=None):
    """Whether [t0, t1] overlaps the time 503 is expected."""
    if REDIS_DOWN is None:
        return False
    end = (REDIS_UP or STOP) + WINDOW_AFTER
    return (t1 if t1 is not None else t0) >= REDIS_DOWN and t0 <= end


def redis_answers():
    return (
        subprocess.run(
            ["redis-cli", "-p", REDIS_PORT, "ping"], capture_output=True, text=True
        ).stdout.strip()
        == "PONG"
    )


def restart_redis():
    global REDIS_DOWN, REDIS_UP
    time.sleep(max(0.0, START + DURATION / 2 - time.time()))
    REDIS_DOWN = time.time()
    subprocess.run(["redis-cli", "-p", REDIS_PORT, "shutdown", "save"], capture_output=True)
    print(f"  {REDIS_DOWN - START:5.0f} s  Redis stopped (SHUTDOWN SAVE)", flush=True)
    time.sleep(RESTART_DOWN)
    subprocess.run(["bash", "-c", REDIS_START], check=True)
    while not redis_answers():
        time.sleep(0.05)
    REDIS_UP = time.time()
    print(f"  {REDIS_UP - START:5.0f} s  Redis answers again, with its data", flush=True)


def rss_and_fds():
    with open(f"/proc/{TG_PID}/status") as status:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) / 1024
    fds = len(os.listdir(f"/proc/{TG_PID}/fd"))
    return rss, fds


SAMPLES = []  # (seconds since start, RSS MiB, fds)


def sampler():
    n = 0
    while True:
        at = START + n * SAMPLE
        if at > STOP + 0.5:
            return
        time.sleep(max(0.0, at - time.time()))
        rss, fds = rss_and_fds()
        SAMPLES.append((n * SAMPLE, rss, fds))
        with RESULTS_LOCK:
            done = len(RESULTS)
        print(f"  {n * SAMPLE:5.0f} s  RSS {rss:6.1f} MiB  fds {fds:4d}  (driver answers so far: {done})", flush=True)
        n += 1


def main():
    wrk = subprocess.Popen(
        [
            "wrk", "-t1", "-c", WRK_CONNECTIONS, "-d", f"{int(DURATION)}s", "--timeout", "10s",
            "-s", WRK_SCRIPT, f"http://127.0.0.1:{PROXY}/", "--", CACHED_TOKENS,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    threads = [threading.Thread(target=sampler), threading.Thread(target=restart_redis)]
    for pause, step, port in [
        (0.02, miss_step, FA),
        (0.01, malformed_step, FA),
        (0.02, forged_step, FA),
        (0.05, one_ip_step, FA),
    ]:
        client = Client(port)
        threads.append(threading.Thread(target=loop(pause, lambda s=step, c=client: s(c))))
    for _ in range(2):
        admin, gate = Client(ADMIN), Client(FA)
        threads.append(threading.Thread(target=loop(0.2, lambda a=admin, g=gate: revoke_step(a, g))))
    admin = Client(ADMIN)
    threads.append(threading.Thread(target=loop(0.3, lambda a=admin: admin_step(a))))
    for thread in threads:
        thread.daemon = True
        thread.start()
    wrk_out, _ = wrk.communicate()
    for thread in threads:
        thread.join()
    # Idle: connections close, what is left stays.
    time.sleep(2)
    idle_rss, idle_fds = rss_and_fds()
    report(wrk_out, idle_rss, idle_fds)


def report(wrk_out, idle_rss, idle_fds):
    counts = collections.Counter()
    unexpected = collections.Counter()
    window_503 = []
    for t, kind, status in RESULTS:
        counts[(kind, status)] += 1
        if status in EXPECTED[kind]:
            continue
        if status == 503 and in_redis_window(t):
            window_503.append(t)
            continue
        unexpected[(kind, status)] += 1
    # wrk: "second status count" lines from the script's done().
    for line in wrk_out.splitlines():
        m = re.match(r"^status (\d+) (\d+) (\d+)$", line)
        if not m:
            continue
        second, status, n = int(m.group(1)), int(m.group(2)), int(m.group(3))
        counts[("cached", status)] += n
        if status in EXPECTED["cached"]:
            continue
        if status == 503 and in_redis_window(second - 1, second + 1):
            window_503.extend([second] * n)
            continue
        unexpected[("cached", status)] += n
    m = re.search(r"Socket errors: (.*)", wrk_out)
    if m:
        unexpected[("cached", "socket errors: " + m.group(1))] += 1
    total = re.search(r"(\d+) requests in", wrk_out)

    print()
    print(f"answers by kind and status over {DURATION:.0f} s:")
    for (kind, status), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"  {kind:20s} {status!s:>22s} {n:10d}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out)
    if total and rate:
        print(f"  (wrk, cached: {total.group(1)} requests, {float(rate.group(1)):.0f} req/s)")
    print()
    if window_503:
        print(
            f"503 while Redis was away (stopped for {REDIS_UP - REDIS_DOWN:.1f} s): "
            f"{len(window_503)} answers, the first {min(window_503) - REDIS_DOWN:.1f} s after "
            f"it stopped, the last {max(window_503) - REDIS_UP:+.1f} s from when it answered again"
        )
    if unexpected:
        print("UNEXPECTED answers:")
        for (kind, status), n in sorted(unexpected.items(), key=lambda kv: str(kv[0])):
            print(f"  {kind:20s} {status!s:>22s} {n:10d}")
    else:
        print("unexpected answers: none")

    print()
    warm = [s for s in SAMPLES if s[0] >= WARMUP]
    base, last = warm[0], warm[-1]
    rss_peak = max(s[1] for s in warm)
    fds_peak = max(s[2] for s in warm)
    print(
        f"RSS: {base[1]:.1f} MiB after the warm-up ({base[0]:.0f} s), peak {rss_peak:.1f}, "
        f"{last[1]:.1f} at the end ({last[0]:.0f} s, {100 * (last[1] / base[1] - 1):+.1f}%), "
        f"{idle_rss:.1f} idle after the traffic"
    )
    print(
        f"fds: {base[2]} after the warm-up, peak {fds_peak}, {last[2]} at the end "
        f"({100 * (last[2] / base[2] - 1):+.1f}%), {idle_fds} idle after the traffic"
    )
    rss_ok = last[1] <= base[1] * 1.1
    fds_ok = abs(last[2] - base[2]) <= base[2] * 0.1
    print(f"RSS within 10%: {'yes' if rss_ok else 'NO'}; fds within 10%: {'yes' if fds_ok else 'NO'}")
    sys.exit(0 if rss_ok and fds_ok and not unexpected else 1)


if __name__ == "__main__":
    main()
