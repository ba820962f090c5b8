# What `nix flake check` builds and runs (Linux): the packages, clippy, rustfmt, the test
# suite under nextest, cfn-lint on the generated template, and three replicas driven by the
# real Python clients. The cargo checks share one set of dependency artifacts.
{ pkgs, build, tools, packages }:
let
  inherit (pkgs) lib;
  inherit (build) craneLib src commonArgs cargoArtifacts;

  anyTest = names: lib.concatMapStringsSep " | " (name: "test(=e2e::${name})") names;

  # The tests of e2e.rs that drive pip, uv, twine and build, which come from a venv made from
  # PyPI (tests/common/python.rs). The other tests of e2e.rs use the binary alone and run;
  # the replicas check below drives the clients from nixpkgs instead.
  e2eWithClients = [
    "open_index_round_trip_with_twine_pip_and_uv"
    "uv_resolves_through_pep658_metadata_without_downloading_the_wheel"
    "authenticated_index_refuses_clients_without_credentials"
    "a_300_mb_upload_keeps_the_server_under_64_mb"
  ];

  # Tests the build sandbox cannot run: it has no network (so nothing from PyPI), no root and
  # no Docker. `cargo test --workspace` (.ci/run) still runs them all.
  outsideTheSandbox = [
    # LocalStack runs from a venv pip-installed from PyPI (tests/localstack/mod.rs).
    "(binary(=deploy_suite) & test(/^deploy_localstack::/))"
    "(binary(=server_suite) & (${anyTest e2eWithClients}))"
    # cfn-lint comes from a venv made from PyPI; the cfn-lint check below lints the same
    # templates with nixpkgs' cfn-lint.
    "(binary(=deploy_suite) & test(=template::cfn_lint_is_clean))"
    # The one-second-timestamp test of consistency.rs (root, a loop device) runs only with
    # WHEELHOUSE_PRIVILEGED_TESTS=1 and says so otherwise: the sandbox leaves it unset.
    # LocalStack plus, where there is one, a Docker engine: `nix run .#integration`.
    "package(=wheelhouse-integration)"
  ];
  filterset = "not (${lib.concatStringsSep " | " outsideTheSandbox})";
in
{
  inherit (packages) wheelhouse wheelhouse-deploy image;

  clippy = craneLib.cargoClippy (commonArgs // {
    inherit cargoArtifacts;
    cargoClippyExtraArgs = "--all-targets -- -D warnings";
  });

  fmt = craneLib.cargoFmt {
    inherit src;
    cargoExtraArgs = "--all";
  };

  nextest = craneLib.cargoNextest (commonArgs // {
    inherit cargoArtifacts;
    cargoNextestExtraArgs = "-E ${lib.escapeShellArg filterset}";
  });

  cfn-lint = import ./cfn-lint.nix {
    inherit pkgs tools;
    inherit (packages) wheelhouse-deploy;
  };

  replicas = import ./replicas.nix {
    inherit pkgs tools;
    inherit (packages) wheelhouse;
  };
}
