# `nix run` targets: the server (the default), the deploy tool (`nix run .#deploy -- preview`),
# and the integration suite, which needs LocalStack, root and, for its container half, a Docker
# engine, so it runs on the caller's machine rather than in the build sandbox.
{ pkgs, packages }:
let
  inherit (pkgs) lib;

  app = program: description: {
    type = "app";
    inherit program;
    meta.description = description;
  };

  # The suite's harness makes what it needs itself (the images, with image/build and
  # integration/localstack-image/build; a LocalStack venv), so this brings every tool those
  # use rather than trusting the host to have them: the toolchain, the docker CLI, python3
  # (venv and ensurepip included) for the venvs, debootstrap and util-linux (flock, umount)
  # for the LocalStack image; and runs the README's command in the checkout it is started
  # from. The container half runs when the caller sets WHEELHOUSE_PRIVILEGED_TESTS=1 (as root,
  # with Docker), which the environment passes through.
  # image/build links glibc statically: the static libraries come from nixpkgs through
  # LIBRARY_PATH.
  integration = pkgs.writeShellApplication {
    name = "wheelhouse-integration";
    runtimeInputs = [
      pkgs.cargo
      pkgs.rustc
      pkgs.stdenv.cc
      pkgs.docker-client
      pkgs.git
      pkgs.python3
      pkgs.debootstrap
      pkgs.util-linux
      pkgs.coreutils
      pkgs.gawk
    ];
    text = ''
      root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
      if [ ! -f "$root/integration/Cargo.toml" ]; then
        echo "wheelhouse-integration: run this inside a wheelhouse checkout" >&2
        exit 2
      fi
      cd "$root"
      export LIBRARY_PATH="${pkgs.glibc.static}/lib''${LIBRARY_PATH:+:$LIBRARY_PATH}"
      # --workspace for both: the same features, so the second builds nothing again.
      cargo build --workspace --locked
      exec cargo test --workspace --locked --test suite "$@"
    '';
  };
in
{
  deploy = app "${packages.wheelhouse-deploy}/bin/wheelhouse-deploy"
    "Put the wheelhouse appliance up on AWS as one CloudFormation stack";
} // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
  default = app "${packages.wheelhouse}/bin/wheelhouse"
    "The wheelhouse package index server";
  integration = app "${integration}/bin/wheelhouse-integration"
    "The integration suite (LocalStack, three replicas, the Python clients), outside the sandbox";
}
