# Replicas and real clients inside the build sandbox: three `wheelhouse` processes on loopback
# share one package directory. twine uploads a wheel through the first; the second refuses the
# same file again (409) and serves it to pip; uv installs it from the third and publishes a
# second version through it, which pip then fetches from the first. After each upload every
# replica must list the same files with the same sha256 in both the HTML and the JSON pages.
{ pkgs, tools, wheelhouse }:
let
  env = {
    nativeBuildInputs = [ tools.python tools.uv ];
  };

  script = ''
    export HOME=$TMPDIR PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 \
      UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never
    server=${wheelhouse}/bin/wheelhouse
    python=$(command -v python3)

    # Three free loopback ports (the sandbox has its own network namespace, but a build
    # without the sandbox must not collide with whatever runs on the machine).
    read -r port1 port2 port3 < <(python3 -c '
    import socket
    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(*(s.getsockname()[1] for s in socks))
    ')

    # The servers' output goes to files: a background process holding the build log open
    # would keep the build from finishing. Nix ends whatever is left when the builder exits.
    mkdir packages
    for port in "$port1" "$port2" "$port3"; do
      "$server" run -i 127.0.0.1 -p "$port" -P . -a . packages >"replica-$port.log" 2>&1 &
    done
    for port in "$port1" "$port2" "$port3"; do
      for _ in $(seq 100); do
        "$server" healthcheck --url "http://127.0.0.1:$port/health" --timeout 1 && break
        sleep 0.1
      done
      "$server" healthcheck --url "http://127.0.0.1:$port/health"
    done

    # A minimal but complete wheel (module, METADATA, WHEEL, RECORD with digests).
    wheel() {
      python3 - "$1" "$2" <<'EOF'
    import base64, hashlib, os, sys, zipfile
    version, dest = sys.argv[1], sys.argv[2]
    info = f"nix_check_demo-{version}.dist-info"
    files = {
        "nix_check_demo/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: nix-check-demo\nVersion: {version}\nRequires-Python: >=3.8\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: wheelhouse-nix-check\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(f"{dest}/nix_check_demo-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    EOF
    }

    # Every replica lists exactly the wheels in dist/ with their sha256, in HTML and in JSON.
    consistent() {
      python3 - "$port1" "$port2" "$port3" <<'EOF'
    import hashlib, json, pathlib, re, sys, urllib.request
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in pathlib.Path("dist").glob("*.whl")}
    for port in sys.argv[1:]:
        url = f"http://127.0.0.1:{port}/simple/nix-check-demo/"
        html = urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "text/html"})).read().decode()
        listed = dict((m[1], m[2]) for m in re.finditer(r'href="[^"]*/([^/"#]+)#sha256=([0-9a-f]{64})"', html))
        assert listed == expected, f"replica on port {port} lists {listed} in HTML, expected {expected}"
        accept = "application/vnd.pypi.simple.v1+json"
        page = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept})))
        listed = {f["filename"]: f["hashes"]["sha256"] for f in page["files"]}
        assert listed == expected, f"replica on port {port} lists {listed} in JSON, expected {expected}"
    print(f"all replicas list {sorted(expected)}")
    EOF
    }

    imports() {
      PYTHONPATH=$1 python3 -c "import nix_check_demo; assert nix_check_demo.VERSION == '$2'"
    }

    # twine uploads through replica 1.
    wheel 1.0 dist
    python3 -m twine upload --non-interactive --disable-progress-bar \
      --repository-url "http://127.0.0.1:$port1/" -u nix -p check dist/*
    consistent

    # Replica 2 already has the file: the same upload through it is refused.
    if python3 -m twine upload --non-interactive --disable-progress-bar \
      --repository-url "http://127.0.0.1:$port2/" -u nix -p check dist/*; then
      echo "replica 2 accepted a file replica 1 had already stored" >&2
      exit 1
    fi

    # pip downloads the very bytes from replica 2, and installs them.
    python3 -m pip download --no-deps --index-url "http://127.0.0.1:$port2/simple/" \
      --dest downloaded nix-check-demo==1.0
    cmp dist/nix_check_demo-1.0-py3-none-any.whl downloaded/nix_check_demo-1.0-py3-none-any.whl
    python3 -m pip install --no-deps --index-url "http://127.0.0.1:$port2/simple/" \
      --target pip-target nix-check-demo==1.0
    imports pip-target 1.0

    # uv installs from replica 3, then publishes 1.1 through it.
    uv pip install --python "$python" --target uv-target \
      --index-url "http://127.0.0.1:$port3/simple/" nix-check-demo==1.0
    imports uv-target 1.0
    wheel 1.1 publish
    uv publish --publish-url "http://127.0.0.1:$port3/" --username nix --password check \
      --trusted-publishing never publish/*
    cp publish/* dist/
    consistent

    # pip on replica 1 resolves the newest version, the one uploaded through replica 3.
    python3 -m pip install --no-deps --index-url "http://127.0.0.1:$port1/simple/" \
      --target pip-latest nix-check-demo
    imports pip-latest 1.1

    kill $(jobs -p)
    wait || true
    mkdir -p $out
    cp replica-*.log $out/
  '';
in
pkgs.runCommand "wheelhouse-replicas" env script
