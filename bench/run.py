#!/usr/bin/env python3
"""wheelhouse against pypiserver 2.4.2 and nginx, on this machine, in one run.

Generates corpora of real minimal wheels, starts every server on loopback, drives each with
wrk, counts syscalls per request with strace, and writes docs/benchmarks.md and
docs/benchmarks.png. Installs what it needs: wrk, nginx-light and strace from Debian's
packages (when missing), pypiserver and friends in a venv under target/bench.

    python3 bench/run.py                 # the full run (about 18 minutes on 2 cores)
    python3 bench/run.py --quick         # 1k and 10k files, short cells: a smoke run
    python3 bench/run.py --stalled-only  # only the stalled-uploads rows (10k files, ~2 minutes),
                                         # rewriting their section of docs/benchmarks.md
    python3 bench/run.py --busy-only     # only the busy-index rows (10k and 100k files, one
                                         # upload a second; the seed's upload profile; syscalls
                                         # at 1 and 256 connections), rewriting their section
"""

import argparse
import base64
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WORK = REPO / "target" / "bench"
FILES_PER_PROJECT = 10
BIG_SIZE = 100 * 1024 * 1024
USER, PASSWORD = "bench", "bench-password"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, **kwargs)


# ----------------------------------------------------------------------------- set-up


def ensure_tools():
    missing = [pkg for tool, pkg in [("wrk", "wrk"), ("nginx", "nginx-light"), ("strace", "strace")]
               if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"missing {missing}: install them with apt-get (needs root)")
        log(f"installing {missing}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-q", *missing], env=env, stdout=subprocess.DEVNULL)


def ensure_venv():
    venv = WORK / "venv"
    requirements = (BENCH / "requirements.txt").read_bytes() + (
        BENCH.parent / "tests/python/build.txt").read_bytes()
    stamp = venv / "requirements.sha256"
    digest = hashlib.sha256(requirements).hexdigest()
    if not (stamp.exists() and stamp.read_text() == digest):
        log("creating the Python venv (pypiserver, gunicorn, matplotlib)")
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)])
        # The locks (by tests/python/lock) hold the whole tree with hashes; the build tools go
        # first, so that a package PyPI has only as sources is built with them.
        build = BENCH.parent / "tests/python/build.txt"
        run([str(venv / "bin/pip"), "install", "-q", "--require-hashes", "--no-deps", "-r",
             str(build)])
        run([str(venv / "bin/pip"), "install", "-q", "--require-hashes", "--no-deps",
             "--no-build-isolation", "-r", str(BENCH / "requirements.txt")])
        stamp.write_text(digest)
    return venv


def build_wheelhouse():
    log("building wheelhouse (release)")
    # The server alone: the AWS SDK (the deploy tool) is not part of what is measured.
    run(["cargo", "build", "--release", "--locked", "--no-default-features", "--bin",
         "wheelhouse"], cwd=REPO)
    return REPO / "target/release/wheelhouse"


def wheel_bytes(project, version):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = f"{project}-{version}.dist-info"
        zf.writestr(f"{project}/__init__.py", "VALUE = 1\n")
        zf.writestr(f"{info}/METADATA",
                    f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
                    "Requires-Python: >=3.8\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return buf.getvalue()


def corpus(files):
    """A flat directory of `files` wheels, FILES_PER_PROJECT per project, and two 100 MB
    files; made once and reused."""
    root = WORK / f"corpus-{files}"
    done = WORK / f"corpus-{files}.complete"
    if done.exists():
        return root
    log(f"generating {files} wheels")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(files // FILES_PER_PROJECT):
        project = f"pkg{i:06d}"
        for j in range(FILES_PER_PROJECT):
            version = f"1.{j}"
            (root / f"{project}-{version}-py3-none-any.whl").write_bytes(
                wheel_bytes(project, version))
    chunk = os.urandom(1024 * 1024)
    for version in ("1.0", "2.0"):
        with open(root / f"bigpkg-{version}-py3-none-any.whl", "wb") as f:
            for _ in range(BIG_SIZE // len(chunk)):
                f.write(chunk)
    done.touch()
    return root


def warm_page_cache(root):
    """Reads every file of the corpus once, so that no server is measured reading from the
    disk what an earlier step (a big upload, another corpus) pushed out of the page cache."""
    for entry in os.scandir(root):
        with open(entry.path, "rb") as f:
            while f.read(1 << 20):
                pass


def htpasswd():
    import_path = WORK / "venv/lib"
    path = WORK / "htpasswd"
    if not path.exists():
        sys.path[:0] = [str(p) for p in import_path.glob("python*/site-packages")]
        import bcrypt  # from the bench venv
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()
        path.write_text(f"{USER}:{hashed}\n")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, path="/health", timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


# ----------------------------------------------------------------------------- servers


class Server:
    """A server process (and its children) on a loopback port, stopped on exit."""

    def __init__(self, name, cmd, port, env=None, cwd=None):
        self.name, self.port = name, port
        self.logfile = open(WORK / f"{name}.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.logfile,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self):
        pids = [self.proc.pid]
        for pid in pids:
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            pids.extend(int(c) for c in children)
        return pids

    def rss_mib(self):
        """Peak resident memory, summed over the process tree."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.logfile.close()


def start_wheelhouse(binary, root, auth, extra=()):
    port = free_port()
    access = ["-P", str(htpasswd()), "-a", "update,download,list"] if auth else ["-P", ".", "-a", "."]
    server = Server("wheelhouse", [str(binary), "run", "-i", "127.0.0.1", "-p", str(port),
                                   "--disable-fallback", "--log-stream", "none", *access,
                                   *extra, str(root)], port)
    wait_ready(port)
    return server


PYPISERVER_APP = """
import json, os
import pypiserver
from pypiserver.config import Config
config = Config.from_args(json.loads(os.environ["BENCH_PYPISERVER_ARGS"]))
app = pypiserver.setup_routes_from_config(pypiserver.app_from_config(config), config)
"""


def start_pypiserver(venv, root, backend, auth):
    port = free_port()
    app_dir = WORK / "pypiserver-app"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "bench_app.py").write_text(PYPISERVER_APP)
    access = ["-P", str(htpasswd()), "-a", "update,download,list"] if auth else ["-P", ".", "-a", "."]
    args = ["run", "--disable-fallback", "--backend", backend, *access, str(root)]
    env = dict(os.environ, BENCH_PYPISERVER_ARGS=json.dumps(args))
    server = Server(f"pypiserver-{backend}",
                    [str(venv / "bin/gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}",
                     "--timeout", "600", "--chdir", str(app_dir), "bench_app:app"],
                    port, env=env)
    wait_ready(port)
    return server


def start_nginx(static_root):
    port = free_port()
    conf_dir = WORK / "nginx"
    (conf_dir / "tmp").mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "nginx.conf"
    conf.write_text(f"""
worker_processes auto;
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {conf_dir}/tmp;
    proxy_temp_path {conf_dir}/tmp;
    fastcgi_temp_path {conf_dir}/tmp;
    uwsgi_temp_path {conf_dir}/tmp;
    scgi_temp_path {conf_dir}/tmp;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {static_root};
        location /health {{ return 200 "ok"; }}
    }}
}}
""")
    server = Server("nginx", ["nginx", "-c", str(conf), "-p", str(conf_dir), "-g", "daemon off;"],
                    port)
    wait_ready(port)
    return server


def static_copy(server_port, root, project, small_file):
    """nginx's document root: the same project page bytes wheelhouse serves, the same files."""
    static = WORK / "static"
    shutil.rmtree(static, ignore_errors=True)
    page_dir = static / "simple" / project
    page_dir.mkdir(parents=True)
    conn = http.client.HTTPConnection("127.0.0.1", server_port)
    conn.request("GET", f"/simple/{project}/")
    (page_dir / "index.html").write_bytes(conn.getresponse().read())
    (static / "packages").mkdir()
    for name in (small_file, "bigpkg-1.0-py3-none-any.whl"):
        shutil.copy(root / name, static / "packages" / name)
    return static


# ----------------------------------------------------------------------------- load


def auth_header(auth):
    if not auth:
        return ""
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def wrk(port, path, script, conns, seconds, auth, extra_env=None):
    env = dict(os.environ, BENCH_DIR=str(BENCH), BENCH_AUTH=auth_header(auth), **(extra_env or {}))
    threads = min(conns, 2)
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--timeout", "30s",
           "-s", str(BENCH / script), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            secs = result["duration_us"] / 1e6
            result["rps"] = result["requests"] / secs if secs else 0.0
            result["mib_s"] = result["bytes"] / secs / 2**20 if secs else 0.0
            return result
    raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")


FS_CALLS = {"openat", "open", "close", "statx", "stat", "newfstatat", "fstat", "lstat",
            "getdents64", "read", "pread64", "readlink", "access", "lseek", "utimensat"}


def traced(server, action):
    """Runs `action()` with `strace -f -c` attached to the server's processes: (what it
    returned, syscalls counted, filesystem syscalls among them)."""
    out = WORK / f"strace-{server.name}.txt"
    cmd = ["strace", "-f", "-c", "-o", str(out)]
    for pid in server.pids():
        cmd += ["-p", str(pid)]
    tracer = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    result = action()
    time.sleep(0.5)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=120)
    total = fs = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and not line.startswith("100.00"):
            name, calls = parts[-1], int(parts[3])
            total += calls
            if name in FS_CALLS:
                fs += calls
    return result, total, fs


def syscalls_per_request(server, path, requests, auth):
    """strace -c over `requests` sequential keep-alive GETs: (all syscalls, filesystem ones)."""
    def sequential():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        headers = {"Authorization": auth_header(auth)} if auth else {}
        for _ in range(requests):
            conn.request("GET", path, headers=headers)
            conn.getresponse().read()
        conn.close()

    _, total, fs = traced(server, sequential)
    return total / requests, fs / requests


# ----------------------------------------------------------------------------- the run


def scenarios(project, small_file):
    return [
        ("project page", f"/simple/{project}/", "get.lua", {}),
        ("root index", "/simple/", "get.lua", {}),
        ("small download", f"/packages/{small_file}", "get.lua", {}),
        ("pip-install flow", "/", "flow.lua", {"BENCH_FLOW": str(WORK / "flow.txt")}),
    ]


def settle(server, limit=300):
    """Waits until requests left over from the last cell are done (gunicorn workers go on
    with queued requests after wrk stops), so that they do not slow the next cell."""
    deadline = time.time() + limit
    while time.time() < deadline:
        start = time.time()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=limit)
            conn.request("GET", "/health")
            conn.getresponse().read()
        except OSError:
            pass
        if time.time() - start < 0.2:
            return
        time.sleep(0.2)


def measure(results, server_name, server, size, auth, cells, seconds, conns_list):
    for scenario, path, script, env in cells:
        for conns in conns_list:
            result = wrk(server.port, path, script, conns, seconds, auth, env)
            result.update(server=server_name, size=size, scenario=scenario, auth=auth,
                          conns=conns, rss_mib=server.rss_mib())
            results.append(result)
            settle(server)
            log(f"{size or '-':>6} {server_name:<22} {scenario:<18} auth={int(auth)} c={conns:<3} "
                f"{result['rps']:>10.1f} req/s p50 {result['p50_us'] / 1000:.2f} ms "
                f"p99 {result['p99_us'] / 1000:.2f} ms errors {result['errors']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k files, 2 s cells")
    parser.add_argument("--seconds", type=int, default=4, help="length of each load cell")
    parser.add_argument("--stalled-only", action="store_true",
                        help="only the stalled-uploads rows, rewriting their section of the report")
    parser.add_argument("--busy-only", action="store_true",
                        help="only the busy-index rows, rewriting their section of the report")
    args = parser.parse_args()
    if args.stalled_only:
        return stalled_only(args.seconds)
    if args.busy_only:
        return busy_only(args.seconds)
    sizes = [1000, 10000] if args.quick else [1000, 10000, 100000]
    seconds = 2 if args.quick else args.seconds
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    venv = ensure_venv()
    binary = build_wheelhouse()
    htpasswd()
    results, syscalls, extras = [], [], {}
    for size in sizes:
        root = corpus(size)
        warm_page_cache(root)
        project = f"pkg{size // FILES_PER_PROJECT // 2:06d}"
        small_file = f"{project}-1.0-py3-none-any.whl"
        projects = [f"pkg{i:06d}" for i in range(0, size // FILES_PER_PROJECT, 7)][:500]
        (WORK / "flow.txt").write_text(
            "".join(f"{p} {p}-1.{i % FILES_PER_PROJECT}-py3-none-any.whl\n"
                    for i, p in enumerate(projects)))
        cells = scenarios(project, small_file)
        for auth in (False, True):
            server = start_wheelhouse(binary, root, auth)
            try:
                settle_corpus(root, server, cells[0][1], auth)
                measure(results, "wheelhouse", server, size, auth, cells, seconds, (1, 32))
                for scenario, path, _, _ in cells[:3]:
                    total, fs = syscalls_per_request(server, path, 500, auth)
                    syscalls.append(dict(server="wheelhouse", size=size, scenario=scenario,
                                         auth=auth, total=total, fs=fs))
                if size == 10000 and auth:
                    extras["burst"] = burst(server, seconds)
                if size == sizes[-1] and not auth:
                    extras["memory"] = dict(files=size, rss_mib=server.rss_mib())
            finally:
                server.stop()
            if size == sizes[-1] and not auth:
                extras["memory"]["upload_delta_mib"] = upload_memory(binary, root, cells)
            for backend in ("simple-dir", "cached-dir"):
                server = start_pypiserver(venv, root, backend, auth)
                try:
                    settle_corpus(root, server, cells[0][1], auth)
                    pyp_cells = cells
                    if size >= 100000:
                        # A request takes minutes here: one timed request per scenario.
                        one_request(results, f"pypiserver {backend}", server, size, auth, cells)
                        continue
                    measure(results, f"pypiserver {backend}", server, size, auth, pyp_cells,
                            seconds, (1, 32))
                    if size == 1000 and backend == "simple-dir" and not auth:
                        for scenario, path, _, _ in cells[:3]:
                            total, fs = syscalls_per_request(server, path, 20, auth)
                            syscalls.append(dict(server=f"pypiserver {backend}", size=size,
                                                 scenario=scenario, auth=auth, total=total, fs=fs))
                finally:
                    server.stop()
        if size == 10000:
            extra_rows(results, binary, venv, root, project, small_file, seconds)
            extras["stalled"] = stalled_uploads(binary, venv, root, seconds)
    extras["upload_vs_cp"] = upload_vs_cp(binary)
    extras["busy"] = busy_index(binary, venv, seconds)
    (WORK / "results.json").write_text(json.dumps(
        dict(results=results, syscalls=syscalls, extras=extras), indent=1))
    report(results, syscalls, extras, sizes, seconds)


def one_request(results, name, server, size, auth, cells):
    for scenario, path, _, _ in cells:
        if scenario == "pip-install flow":
            continue
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1200)
        headers = {"Authorization": auth_header(auth)} if auth else {}
        start = time.time()
        conn.request("GET", path, headers=headers)
        status = conn.getresponse()
        status.read()
        took = time.time() - start
        results.append(dict(server=name, size=size, scenario=scenario, auth=auth, conns=1,
                            requests=1, rps=1 / took, p50_us=took * 1e6, p99_us=took * 1e6,
                            errors=int(status.status >= 400), status_errors=0, bytes=0,
                            mib_s=0, rss_mib=server.rss_mib(), single=True))
        log(f"{size:>6} {name:<22} {scenario:<18} auth={int(auth)} one request: {took:.1f} s")


def extra_rows(results, binary, venv, root, project, small_file, seconds):
    """At 10k files: health, 100 MB download and upload, for every server, and nginx."""
    big = "/packages/bigpkg-1.0-py3-none-any.whl"
    wheel = WORK / "upload.whl"
    wheel.write_bytes(wheel_bytes("benchup", "0.0"))
    upload_env = {"BENCH_WHEEL": str(wheel)}
    cells = [("health", "/health", "get.lua", {}), ("100 MB download", big, "get.lua", {})]
    for auth in (False, True):
        servers = [("wheelhouse", lambda: start_wheelhouse(binary, root, auth))] + [
            (f"pypiserver {b}", lambda b=b: start_pypiserver(venv, root, b, auth))
            for b in ("simple-dir", "cached-dir")]
        for name, start in servers:
            server = start()
            try:
                measure(results, name, server, 10000, auth, cells, seconds, (1, 32))
            finally:
                server.stop()
            # Uploads go to an empty directory of their own, so the corpus stays as it is.
            empty = WORK / "uploads"
            shutil.rmtree(empty, ignore_errors=True)
            empty.mkdir()
            server = (start_wheelhouse(binary, empty, auth) if name == "wheelhouse"
                      else start_pypiserver(venv, empty, name.split()[1], auth))
            try:
                measure(results, name, server, 10000, auth,
                        [("upload", "/", "upload.lua", upload_env)], seconds, (1, 32))
            finally:
                server.stop()
    # The ceiling: nginx serving the same page bytes and files statically.
    helper = start_wheelhouse(binary, root, False)
    try:
        static = static_copy(helper.port, root, project, small_file)
    finally:
        helper.stop()
    # Its rows hold for every corpus size: a static file does not care.
    for size in (None,):
        server = start_nginx(static)
        try:
            measure(results, "nginx (static)", server, size, False, [
                ("project page", f"/simple/{project}/", "get.lua", {}),
                ("small download", f"/packages/{small_file}", "get.lua", {}),
                ("health", "/health", "get.lua", {}),
                ("100 MB download", big, "get.lua", {}),
            ], seconds, (1, 32))
        finally:
            server.stop()


STALLED_UPLOADS = 300
STALLED_BOUNDARY = "stalledboundary"


def every_server(binary, venv, root, wheelhouse_flags=()):
    """(name, start) for wheelhouse and both pypiserver backends on `root`, auth off."""
    return [("wheelhouse", lambda: start_wheelhouse(binary, root, False, wheelhouse_flags))] + [
        (f"pypiserver {b}", lambda b=b: start_pypiserver(venv, root, b, False))
        for b in ("simple-dir", "cached-dir")]


def stalled_upload(port):
    """An upload that sends its head and the start of its file, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    form = (f"--{STALLED_BOUNDARY}\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\n"
            f"file_upload\r\n--{STALLED_BOUNDARY}\r\nContent-Disposition: form-data; "
            f"name=\"content\"; filename=\"stalled-1.0.tar.gz\"\r\n\r\nthe first bytes")
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            f"boundary={STALLED_BOUNDARY}\r\nContent-Length: {10 * 2**20}\r\n\r\n")
    sock.sendall(head.encode() + form.encode())
    return sock


def stalled_uploads(binary, venv, root, seconds):
    """32 clients doing the pip-install flow, alone and next to 300 uploads that stall after
    their first bytes (clients that hold connections and upload slots without sending)."""
    flow = {"BENCH_FLOW": str(WORK / "flow.txt")}
    # The cap is raised so that every stalled upload is held, the hardest case for the server;
    # with the default (64) the rest would get 503 at once.
    servers = every_server(binary, venv, root,
                           ["--max-concurrent-uploads", str(STALLED_UPLOADS + 100)])
    rows = []
    for name, start in servers:
        server = start()
        try:
            # Past the directory's settle window (2 s after its last change), so that the
            # quiet row is the steady state and not the first seconds after a change.
            time.sleep(3)
            quiet = wrk(server.port, "/", "flow.lua", 32, seconds, False, flow)
            stalled = [stalled_upload(server.port) for _ in range(STALLED_UPLOADS)]
            # Their temp files changed the directory: wait out its settle window here too, so
            # that this row shows what the stalled clients cost, not a directory re-read
            # (that cost belongs to the busy-index rows).
            time.sleep(3)
            loaded = wrk(server.port, "/", "flow.lua", 32, seconds, False, flow)
            for sock in stalled:
                sock.close()
        finally:
            server.stop()
        rows.append(dict(server=name, quiet=quiet, loaded=loaded))
        log(f"stalled uploads {name}: quiet p99 {quiet['p99_us'] / 1000:.1f} ms "
            f"{quiet['rps']:.0f} req/s; with {STALLED_UPLOADS} stalled p99 "
            f"{loaded['p99_us'] / 1000:.1f} ms {loaded['rps']:.0f} req/s errors {loaded['errors']}")
    return rows


STALLED_HEADING = "## Installs next to stalled uploads"


def stalled_section(rows, seconds):
    lines = [STALLED_HEADING, "",
             f"32 connections doing the pip-install flow for {seconds} s at 10,000 files, first "
             f"alone, then while {STALLED_UPLOADS} uploads hold their connections after sending "
             "their first bytes (wheelhouse with `--max-concurrent-uploads` raised so that all of "
             "them are held). The target: p99 with the stalled uploads within 2x of p99 alone. "
             "Both rows start 3 s after the last change of the directory (the stalled uploads' "
             "temp files change it), past its settle window.", "",
             "| server | req/s alone | p99 ms alone | req/s stalled | p99 ms stalled | errors stalled "
             "| p99 stalled / alone |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        q, l = r["quiet"], r["loaded"]
        errors = l["errors"] + l.get("status_errors", 0)
        done = l["requests"] > 0
        ratio_text = f"{l['p99_us'] / q['p99_us']:.2f}x" if done and q["p99_us"] else "no answer"
        lines.append(f"| {r['server']} | {q['rps']:,.0f} | {q['p99_us'] / 1000:.1f} | "
                     f"{l['rps']:,.0f} | {l['p99_us'] / 1000:.1f} | {errors} | {ratio_text} |")
    lines.append("")
    return lines


def stalled_only(seconds):
    """Measures only the stalled-uploads rows and rewrites their section of the report."""
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    venv = ensure_venv()
    binary = build_wheelhouse()
    root = corpus(10000)
    warm_page_cache(root)
    projects = [f"pkg{i:06d}" for i in range(0, 10000 // FILES_PER_PROJECT, 7)][:500]
    (WORK / "flow.txt").write_text(
        "".join(f"{p} {p}-1.{i % FILES_PER_PROJECT}-py3-none-any.whl\n"
                for i, p in enumerate(projects)))
    replace_section(STALLED_HEADING, stalled_section(stalled_uploads(binary, venv, root, seconds), seconds))
    log("rewrote the stalled-uploads section of docs/benchmarks.md")


BUSY_HEADING = "## A busy index: uploads arriving"
BUSY_SIZES = (10000, 100000)
MIXED_CONNS = 255


def settle_corpus(root, server, path, auth=False):
    """Waits until the directory's last change is 3 s old, past any window in which a server
    may distrust it, then asks once, so that no cell measures the first seconds after a
    change by accident (the first-seconds row does it on purpose)."""
    while True:
        info = os.stat(root)
        age = time.time() - max(info.st_mtime, info.st_ctime)
        if age >= 3:
            break
        time.sleep(3 - age)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1200)
    conn.request("GET", path, headers={"Authorization": auth_header(auth)} if auth else {})
    conn.getresponse().read()
    conn.close()


class UploadStream:
    """One new file a second into `root`, alternately uploaded through the server and copied
    in with `cp`, until stopped; `stop` removes what it added."""

    def __init__(self, port, root):
        import threading
        self.port, self.root, self.count, self.failures = port, root, 0, []
        self.wheel = WORK / "busy-upload.whl"
        self.wheel.write_bytes(wheel_bytes("busyup", "0.0"))
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        boundary = "busyboundary"
        while not self.done.is_set():
            started = time.time()
            version = f"1.{os.getpid()}.{self.count}"
            filename = f"busyup-{version}-py3-none-any.whl"
            if self.count % 2 == 0:
                body = "".join(
                    f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                    for k, v in ((":action", "file_upload"), ("name", "busyup"),
                                 ("version", version))).encode()
                body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; "
                         f"filename=\"{filename}\"\r\n\r\n").encode()
                body += self.wheel.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
                conn.request("POST", "/", body, {
                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(response.status)
            else:
                run(["cp", str(self.wheel), str(self.root / filename)])
            self.count += 1
            self.done.wait(max(0.0, 1.0 - (time.time() - started)))

    def stop(self):
        self.done.set()
        self.thread.join()
        for path in self.root.glob("busyup-*"):
            path.unlink()
        if self.failures:
            raise RuntimeError(f"uploads in the stream failed: {self.failures}")
        return self.count


def timed_cell(server, path, script, env, conns, seconds, single):
    if not single:
        return wrk(server.port, path, script, conns, seconds, False, env)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1200)
    start = time.time()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    took = time.time() - start
    return dict(requests=1, rps=1 / took, p50_us=took * 1e6, p95_us=took * 1e6,
                p99_us=took * 1e6, errors=int(response.status >= 400), single=True)


def busy_rows(binary, venv, size, seconds):
    """Quiet against one upload a second, for the project page, the root index and a small
    download, and the first seconds after one change, for every server."""
    root = corpus(size)
    warm_page_cache(root)
    project = f"pkg{size // FILES_PER_PROJECT // 2:06d}"
    cells = scenarios(project, f"{project}-1.0-py3-none-any.whl")[:3]
    servers = every_server(binary, venv, root)
    rows = []
    for name, start in servers:
        # pypiserver takes seconds per request at 100k files: one timed request per cell.
        single = name != "wheelhouse" and size >= 100000
        server = start()
        try:
            for scenario, path, script, env in cells:
                settle_corpus(root, server, path)
                quiet = timed_cell(server, path, script, env, 32, seconds, single)
                stream = UploadStream(server.port, root)
                time.sleep(1.5)
                busy = timed_cell(server, path, script, env, 32, seconds, single)
                uploads = stream.stop()
                rows.append(dict(server=name, size=size, scenario=scenario, quiet=quiet,
                                 busy=busy, uploads=uploads))
                log(f"{size:>6} {name:<22} {scenario:<15} quiet {quiet['rps']:>9.1f} req/s p99 "
                    f"{quiet['p99_us'] / 1000:.1f} ms | 1 upload/s {busy['rps']:>9.1f} req/s p99 "
                    f"{busy['p99_us'] / 1000:.1f} ms ({busy['rps'] / quiet['rps']:.0%})")
            if not single:
                scenario, path, script, env = cells[0]
                for conns in (1, 32):
                    settle_corpus(root, server, path)
                    quiet = wrk(server.port, path, script, conns, 2, False, env)
                    settle_corpus(root, server, path)
                    changed = root / "busyup-9.0-py3-none-any.whl"
                    run(["cp", str(WORK / "busy-upload.whl"), str(changed)])
                    first = wrk(server.port, path, script, conns, 2, False, env)
                    changed.unlink()
                    rows.append(dict(server=name, size=size,
                                     scenario=f"project page, first 2 s after a change, c={conns}",
                                     quiet=quiet, busy=first, uploads=1))
                    log(f"{size:>6} {name:<22} first 2 s c={conns}: {first['rps']:.1f} req/s p99 "
                        f"{first['p99_us'] / 1000:.1f} ms against {quiet['rps']:.1f} settled")
        finally:
            server.stop()
            for path in root.glob("busyup-*"):
                path.unlink()
    return rows


def mixed_profile(binary, venv, seconds):
    """The seed's upload profile: 255 clients, 30% uploads of new files, 70% project pages,
    10,000 files."""
    root = corpus(10000)
    project = f"pkg{10000 // FILES_PER_PROJECT // 2:06d}"
    wheel = WORK / "mixed-upload.whl"
    wheel.write_bytes(wheel_bytes("mixedup", "0.0"))
    env = {"BENCH_WHEEL": str(wheel), "BENCH_PAGE": f"/simple/{project}/"}
    servers = every_server(binary, venv, root)
    rows = []
    for name, start in servers:
        server = start()
        try:
            settle_corpus(root, server, env["BENCH_PAGE"])
            result = wrk(server.port, "/", "mixed.lua", MIXED_CONNS, max(seconds, 10), False, env)
        finally:
            server.stop()
            for path in root.glob("mixedup-*"):
                path.unlink()
        result["server"] = name
        rows.append(result)
        log(f"mixed profile {name}: {result['rps']:.0f} req/s p95 {result['p95_us'] / 1000:.1f} ms "
            f"p99 {result['p99_us'] / 1000:.1f} ms errors {result['errors']}")
    return rows


def syscalls_under_load(server, path, conns, seconds):
    """strace -c while wrk holds `conns` connections: (syscalls, filesystem syscalls) per
    request, and the peak RSS after."""
    result, total, fs = traced(server, lambda: wrk(server.port, path, "get.lua", conns,
                                                   seconds, False))
    requests = max(result["requests"], 1)
    return dict(conns=conns, requests=result["requests"], total=total / requests,
                fs=fs / requests, rss_mib=server.rss_mib())


def concurrency_costs(binary):
    root = corpus(10000)
    project = f"pkg{10000 // FILES_PER_PROJECT // 2:06d}"
    path = f"/simple/{project}/"
    rows = []
    for conns in (1, 256):
        # A fresh server for each, so that the peak RSS is this load's.
        server = start_wheelhouse(binary, root, False)
        try:
            settle_corpus(root, server, path)
            rows.append(syscalls_under_load(server, path, conns, 3))
        finally:
            server.stop()
        log(f"strace at {conns} connections: {rows[-1]['total']:.1f} syscalls/request "
            f"({rows[-1]['fs']:.1f} filesystem), peak RSS {rows[-1]['rss_mib']:.0f} MiB")
    return rows


def busy_section(rows, mixed, costs, seconds):
    lines = [BUSY_HEADING, "",
             f"Each pair of cells is {seconds} s of wrk at 32 connections, first on a settled "
             "directory (its last change at least 3 s old), then while one new file a second lands "
             "in it, alternately uploaded through the server and copied in with `cp`. "
             "pypiserver at 100,000 files is one timed request per cell (it takes seconds). "
             "The first-seconds rows measure on purpose what the others avoid: their quiet cell "
             "is 2 s of wrk on the settled directory, their busy cell 2 s of wrk starting right "
             "after a `cp` into it. Chart: "
             "[benchmarks-busy.png](benchmarks-busy.png).", "",
             "| files | scenario | server | req/s quiet | p99 ms quiet | req/s busy | p99 ms busy "
             "| errors busy | busy / quiet |",
             "|---|---|---|---|---|---|---|---|---|"]
    def cell(row):
        # wrk counts only requests answered within the cell.
        if not row["requests"]:
            return f"none answered in {seconds} s | -"
        return f"{fmt_rate(dict(row, scenario=''))} | {row['p99_us'] / 1000:.2f}"

    for r in rows:
        q, b = r["quiet"], r["busy"]
        ratio_text = f"{b['rps'] / q['rps']:.0%}" if q["requests"] else "-"
        lines.append(f"| {r['size']:,} | {r['scenario']} | {r['server']}"
                     f"{' (one request)' if b.get('single') else ''} | {cell(q)} | {cell(b)} | "
                     f"{b['errors']} | {ratio_text} |")
    lines += ["", f"### The seed's upload profile", "",
              f"{MIXED_CONNS} connections for {max(seconds, 10)} s, each request an upload of a "
              "new file (30%) or the project page (70%), 10,000 files. Pass line: p95 < 2 s, no "
              "5xx.", "",
              "| server | req/s | p50 ms | p95 ms | p99 ms | errors | requests |",
              "|---|---|---|---|---|---|---|"]
    for m in mixed:
        lines.append(f"| {m['server']} | {m['rps']:,.0f} | {m['p50_us'] / 1000:.1f} | "
                     f"{m['p95_us'] / 1000:.1f} | {m['p99_us'] / 1000:.1f} | {m['errors']} | "
                     f"{m['requests']:,} |")
    lines += ["", "### Cost per request at 1 and 256 connections", "",
              "wheelhouse, project page, 10,000 files, 3 s of wrk under `strace -f -c` (which "
              "slows it down: the rates are not comparable, the counts per request are).", "",
              "| connections | requests | syscalls / request | filesystem syscalls / request "
              "| peak RSS MiB |", "|---|---|---|---|---|"]
    for c in costs:
        lines.append(f"| {c['conns']} | {c['requests']:,} | {c['total']:.1f} | {c['fs']:.2f} | "
                     f"{c['rss_mib']:.0f} |")
    lines.append("")
    return lines


def busy_chart(rows):
    sys.path[:0] = [str(p) for p in (WORK / "venv/lib").glob("python*/site-packages")]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = ["project page", "root index", "small download"]
    servers = ["wheelhouse", "pypiserver simple-dir", "pypiserver cached-dir"]
    fig, axes = plt.subplots(1, len(BUSY_SIZES), figsize=(6 * len(BUSY_SIZES), 4.5), sharey=True)
    for ax, size in zip(axes, BUSY_SIZES):
        width = 0.13
        k = 0
        for server in servers:
            for state in ("quiet", "busy"):
                values = [next((r[state]["rps"] for r in rows if r["server"] == server
                                and r["scenario"] == s and r["size"] == size), 0) for s in scen]
                ax.bar([i + k * width for i in range(len(scen))], values, width,
                       label=f"{server}, {'1 upload/s' if state == 'busy' else 'quiet'}",
                       hatch="//" if state == "busy" else None)
                k += 1
        ax.set_yscale("log")
        ax.set_title(f"{size:,} files, 32 connections")
        ax.set_xticks([i + 2.5 * width for i in range(len(scen))])
        ax.set_xticklabels(scen, fontsize=8)
    axes[0].set_ylabel("requests per second (log)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(REPO / "docs/benchmarks-busy.png", dpi=90)


def replace_section(heading, section):
    report_path = REPO / "docs/benchmarks.md"
    text = report_path.read_text() if report_path.exists() else ""
    if heading in text:
        before, _, after = text.partition(heading)
        rest = after.split("\n## ", 1)
        after = "\n## " + rest[1] if len(rest) > 1 else ""
        text = before + "\n".join(section) + after
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    report_path.write_text(text)


def busy_index(binary, venv, seconds):
    rows = []
    for size in BUSY_SIZES:
        rows += busy_rows(binary, venv, size, seconds)
    mixed = mixed_profile(binary, venv, seconds)
    costs = concurrency_costs(binary)
    busy_chart(rows)
    return busy_section(rows, mixed, costs, seconds)


def busy_only(seconds):
    """Measures only the busy-index rows and rewrites their section of the report."""
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    venv = ensure_venv()
    binary = build_wheelhouse()
    replace_section(BUSY_HEADING, busy_index(binary, venv, seconds))
    log("rewrote the busy-index section of docs/benchmarks.md and docs/benchmarks-busy.png")


def burst(server, seconds):
    """The seed's burst: 510 concurrent clients doing the pip-install flow, auth on."""
    result = wrk(server.port, "/", "flow.lua", 510, max(seconds, 10), True,
                 {"BENCH_FLOW": str(WORK / "flow.txt")})
    log(f"burst 510: {result['rps']:.0f} req/s p99 {result['p99_us'] / 1000:.1f} ms "
        f"errors {result['errors']}")
    return result


def multipart_stream(conn, filename, size, auth):
    boundary = "benchboundary7d1f"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\":action\"\r\n\r\nfile_upload\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbigup\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n1.0\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"content\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Content-Length": str(len(head) + size + len(tail))}
    if auth:
        headers["Authorization"] = auth_header(auth)
    conn.putrequest("POST", "/")
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(head)
    chunk = os.urandom(1024 * 1024)
    sent = 0
    while sent < size:
        piece = chunk[: min(len(chunk), size - sent)]
        conn.send(piece)
        sent += len(piece)
    conn.send(tail)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"upload answered {response.status}")


def upload_memory(binary, root, cells):
    """How much a 1 GiB upload adds to the peak RSS of a server that has already listed the
    whole corpus. The upload goes to a directory of its own (the second root), so that the
    corpus stays as it is."""
    uploads = WORK / "uploads"
    shutil.rmtree(uploads, ignore_errors=True)
    uploads.mkdir()
    port = free_port()
    server = Server("wheelhouse", [str(binary), "run", "-i", "127.0.0.1", "-p", str(port),
                                   "--disable-fallback", "--log-stream", "none", "-P", ".",
                                   "-a", ".", "--max-upload-size", "2GiB", str(uploads),
                                   str(root)], port)
    try:
        wait_ready(port)
        for _, path, script, _ in cells[:3]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            conn.request("GET", path)
            conn.getresponse().read()
        before = server.rss_mib()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        multipart_stream(conn, "bigup-1.0-py3-none-any.whl", 1024**3, False)
        after = server.rss_mib()
    finally:
        server.stop()
        shutil.rmtree(uploads, ignore_errors=True)
    log(f"1 GiB upload: peak RSS {before:.1f} -> {after:.1f} MiB")
    return after - before


def upload_vs_cp(binary):
    """A 100 MB upload stream against `cp` of the same bytes to the same disk."""
    source = WORK / "stream-source.bin"
    with open(source, "wb") as f:
        f.write(os.urandom(BIG_SIZE))
    target_dir = WORK / "uploads"
    shutil.rmtree(target_dir, ignore_errors=True)
    target_dir.mkdir()
    cp_times, cp_sync_times, upload_times = [], [], []
    for i in range(3):
        dest = target_dir / f"copy-{i}.bin"
        start = time.time()
        run(["cp", str(source), str(dest)])
        cp_times.append(time.time() - start)
        start = time.time()
        run(["cp", str(source), str(dest) + ".synced"])
        run(["sync", "-f", str(dest) + ".synced"])
        cp_sync_times.append(time.time() - start)
    server = start_wheelhouse(binary, target_dir, False)
    try:
        for i in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
            start = time.time()
            multipart_stream(conn, f"bigup-1.{i}-py3-none-any.whl", BIG_SIZE, False)
            upload_times.append(time.time() - start)
    finally:
        server.stop()
    mib = BIG_SIZE / 2**20
    best = lambda times: mib / min(times)
    result = dict(cp_mib_s=best(cp_times), cp_fsync_mib_s=best(cp_sync_times),
                  upload_mib_s=best(upload_times))
    log(f"100 MB: cp {result['cp_mib_s']:.0f} MiB/s, cp+fsync {result['cp_fsync_mib_s']:.0f}, "
        f"upload {result['upload_mib_s']:.0f}")
    return result


# ----------------------------------------------------------------------------- report


def fmt_rate(row):
    if row is None:
        return "-"
    if row.get("mib_s") and "MB" in row["scenario"]:
        return f"{row['mib_s']:.0f} MiB/s"
    return f"{row['rps']:.1f}" if row["rps"] < 100 else f"{row['rps']:,.0f}"


def ratio(a, b, key="rps"):
    if a is None or b is None or not b.get(key):
        return "-"
    value = a[key] / b[key]
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def report(results, syscalls, extras, sizes, seconds):
    def find(server, size, scenario, auth, conns):
        for r in results:
            if (r["server"], r["size"], r["scenario"], r["auth"], r["conns"]) == (
                    server, size, scenario, auth, conns):
                return r
        return None

    def best_pyp(size, scenario, auth, conns):
        rows = [find(f"pypiserver {b}", size, scenario, auth, conns)
                for b in ("simple-dir", "cached-dir")]
        rows = [r for r in rows if r]
        return max(rows, key=lambda r: r["rps"]) if rows else None

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown CPU")
    lines = [
        "# Benchmarks: wheelhouse, pypiserver 2.4.2 and nginx on one machine",
        "",
        f"Measured by `python3 bench/run.py` on {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores ({cpu}), everything on loopback, the load generator (wrk) "
        f"on the same two cores as the server. Each cell is {seconds} s of wrk at 1 or 32 "
        "connections. pypiserver runs under gunicorn with 4 workers; nginx (Debian's "
        "nginx-light, 2 workers) serves a static copy of the same project page bytes and "
        "the same files. Auth on means bcrypt (cost 12) on download, list and update. "
        "Corpora are flat directories of real minimal wheels, 10 per project. "
        "RSS is the peak of the whole process tree. Raw data: `target/bench/results.json`.",
        "",
        "![requests per second](benchmarks.png)",
        "",
    ]
    for size in sizes:
        lines += [f"## {size:,} files", "",
                  "| scenario | auth | conns | server | req/s | p50 ms | p99 ms | errors | RSS MiB "
                  "| vs pypiserver best | vs nginx |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        scen_order = ["project page", "root index", "small download", "pip-install flow",
                      "health", "100 MB download", "upload"]
        for scenario in scen_order:
            for auth in (False, True):
                for conns in (1, 32):
                    wh = find("wheelhouse", size, scenario, auth, conns)
                    if wh is None:
                        continue
                    pyp = best_pyp(size, scenario, auth, conns)
                    ngx = find("nginx (static)", None, scenario, False, conns)
                    key = "mib_s" if "MB" in scenario else "rps"
                    for name in ("wheelhouse", "pypiserver simple-dir", "pypiserver cached-dir",
                                 "nginx (static)"):
                        row = find(name, None if "nginx" in name else size, scenario,
                                   auth if "nginx" not in name else False, conns)
                        if row is None or ("nginx" in name and auth):
                            continue
                        single = " (one request)" if row.get("single") else ""
                        lines.append(
                            f"| {scenario} | {'bcrypt' if auth else 'off'} | {conns} | {name}"
                            f"{single} | {fmt_rate(row)} | {row['p50_us'] / 1000:.2f} | "
                            f"{row['p99_us'] / 1000:.2f} | {row['errors']} | "
                            f"{row['rss_mib']:.0f} | "
                            + (f"{ratio(wh, pyp, key)} | {ratio(wh, ngx, key)} |"
                               if name == "wheelhouse" else " | |"))
        lines.append("")
    lines += ["## Syscalls per request (strace -c, sequential keep-alive requests)", "",
              "| server | files | scenario | auth | all syscalls | filesystem syscalls |",
              "|---|---|---|---|---|---|"]
    for s in syscalls:
        lines.append(f"| {s['server']} | {s['size']:,} | {s['scenario']} | "
                     f"{'bcrypt' if s['auth'] else 'off'} | {s['total']:.1f} | {s['fs']:.1f} |")
    lines.append("")
    if "burst" in extras:
        b = extras["burst"]
        lines += ["## The seed's burst", "",
                  f"510 concurrent connections doing the pip-install flow with bcrypt auth, "
                  f"10,000 files, wheelhouse: {b['rps']:,.0f} req/s, p50 "
                  f"{b['p50_us'] / 1000:.1f} ms, p99 {b['p99_us'] / 1000:.1f} ms, "
                  f"{b['errors']} errors in {b['requests']:,} requests.", ""]
    if "stalled" in extras:
        lines += stalled_section(extras["stalled"], seconds)
    if "busy" in extras:
        lines += extras["busy"]
    if "memory" in extras:
        m = extras["memory"]
        lines += ["## Memory", "",
                  f"wheelhouse with {m['files']:,} files: peak RSS {m['rss_mib']:.0f} MiB "
                  f"after every scenario above; a 1 GiB upload then raised the peak by "
                  f"{m['upload_delta_mib']:.1f} MiB.", ""]
    u = extras["upload_vs_cp"]
    lines += ["## Upload stream against cp", "",
              f"100 MB to the same disk, best of 3: `cp` {u['cp_mib_s']:.0f} MiB/s, `cp` + "
              f"fsync {u['cp_fsync_mib_s']:.0f} MiB/s, a wheelhouse upload (hashing md5, sha256 "
              f"and blake2b, fsync, link) {u['upload_mib_s']:.0f} MiB/s: "
              f"{u['upload_mib_s'] / u['cp_mib_s'] * 100:.0f}% of `cp`, "
              f"{u['upload_mib_s'] / u['cp_fsync_mib_s'] * 100:.0f}% of `cp` + fsync.", ""]
    (REPO / "docs").mkdir(exist_ok=True)
    (REPO / "docs/benchmarks.md").write_text("\n".join(lines))
    chart(results, sizes)
    log("wrote docs/benchmarks.md and docs/benchmarks.png")


def chart(results, sizes):
    sys.path[:0] = [str(p) for p in (WORK / "venv/lib").glob("python*/site-packages")]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = ["project page", "root index", "small download", "pip-install flow"]
    servers = ["wheelhouse", "pypiserver simple-dir", "pypiserver cached-dir", "nginx (static)"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.5), sharey=True)
    for ax, size in zip(axes, sizes):
        width = 0.2
        for k, server in enumerate(servers):
            values = []
            for s in scen:
                row = next((r for r in results if r["server"] == server and r["scenario"] == s
                            and r["conns"] == 32 and not r["auth"]
                            and r["size"] == (None if "nginx" in server else size)), None)
                values.append(row["rps"] if row else 0)
            ax.bar([i + k * width for i in range(len(scen))], values, width, label=server)
        ax.set_yscale("log")
        ax.set_title(f"{size:,} files, 32 connections, auth off")
        ax.set_xticks([i + 1.5 * width for i in range(len(scen))])
        ax.set_xticklabels(scen, rotation=20, fontsize=8)
    axes[0].set_ylabel("requests per second (log)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPO / "docs/benchmarks.png", dpi=90)


if __name__ == "__main__":
    main()
