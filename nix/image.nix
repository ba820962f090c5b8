# The server image, as image/Dockerfile builds it without Nix: a statically linked
# `wheelhouse` at /wheelhouse and an empty /data/packages owned by UID 10001, nothing else (no
# shell, no store paths). `nix build .#image && docker load < result` gives wheelhouse:latest.
{ pkgs, build }:
let
  inherit (build) craneLib serverArgs;

  # glibc linked statically (crt-static), as image/build does. Cargo is given the target
  # explicitly so that the flag reaches the binary only, not build scripts and proc-macros,
  # which have to stay dynamic.
  staticArgs = serverArgs // {
    pname = "wheelhouse-static";
    CARGO_BUILD_TARGET = pkgs.stdenv.hostPlatform.rust.rustcTarget;
    CARGO_BUILD_RUSTFLAGS = "-C target-feature=+crt-static";
    buildInputs = [ pkgs.glibc.static ];
  };

  static = craneLib.buildPackage (staticArgs // {
    cargoArtifacts = craneLib.buildDepsOnly staticArgs;
    # The image holds this binary and nothing else: a binary that wants a dynamic loader or a
    # shared library fails here rather than at `docker run`.
    postInstall = ''
      bin=$out/bin/wheelhouse
      # Into a file first: `grep -q` on a pipe could stop readelf early, and a failed pipe
      # would read as "static".
      readelf --program-headers --dynamic "$bin" > elf-headers.txt
      if grep -q -e INTERP -e NEEDED elf-headers.txt; then
        echo "$bin is not static:" >&2
        cat elf-headers.txt >&2
        exit 1
      fi
    '';
  });

  # Docker keeps health check durations in nanoseconds.
  seconds = n: n * 1000000000;
in
pkgs.dockerTools.buildLayeredImage {
  name = "wheelhouse";
  tag = "latest";
  # The binary is static: no store path (glibc included) belongs in the image.
  includeStorePaths = false;
  extraCommands = ''
    install -m 0755 ${static}/bin/wheelhouse wheelhouse
    mkdir -p data/packages
  '';
  # The UID the deployment runs the server as must own the volume's mount point, so that a
  # fresh named volume is writable.
  fakeRootCommands = ''
    chown 10001:10001 data/packages
  '';
  config = {
    User = "10001:10001";
    # As pypiserver's image: `docker run IMAGE -P . -a . /data/packages` passes its arguments
    # to `wheelhouse run`.
    Entrypoint = [ "/wheelhouse" "run" ];
    Cmd = [ "/data/packages" ];
    ExposedPorts."8080/tcp" = { };
    Volumes."/data/packages" = { };
    # Exec form: there is no shell. Probes http://127.0.0.1:8080/health.
    Healthcheck = {
      Test = [ "CMD" "/wheelhouse" "healthcheck" ];
      Interval = seconds 10;
      Timeout = seconds 3;
      StartPeriod = seconds 2;
      Retries = 3;
    };
  };
}
