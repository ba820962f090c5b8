# Building with crane: the source, the arguments every build shares, and the dependencies
# built once and reused. The toolchain is nixpkgs' own (rustc, cargo, clippy, rustfmt).
{ pkgs, crane }:
let
  inherit (pkgs) lib;

  craneLib = crane.mkLib pkgs;
  root = ../.;

  # Cargo's files, plus what the tests read besides Rust code: insta's snapshots, and the
  # Python lock files that the tests' venv builders embed with include_str!.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.commonCargoSources root)
      ../tests/snapshots
      (lib.fileset.fileFilter (file: file.hasExt "txt") ../tests/python)
    ];
  };

  commonArgs = {
    inherit src;
    strictDeps = true;
    # --workspace: the integration crate is linted, and its dependencies are cached, with the
    # rest. --locked: Cargo.lock decides, as in .ci/run.
    cargoExtraArgs = "--locked --workspace";
    buildInputs = lib.optionals pkgs.stdenv.hostPlatform.isDarwin [ pkgs.libiconv ];
  };

  # Every dependency of every target of the workspace (tests and dev-dependencies included),
  # shared by the checks.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  # The server alone, as the image is built: without the `deploy` feature there is no AWS SDK.
  # Its dependencies are built with other features than the workspace's, so they have their own
  # artifacts rather than rebuilding part of the shared ones at every source change.
  serverArgs = commonArgs // {
    pname = "wheelhouse";
    cargoExtraArgs = "--locked --no-default-features --bin wheelhouse";
    # The tests run in the nextest check, with the filter that keeps them in the sandbox.
    doCheck = false;
  };
in
{
  inherit craneLib src commonArgs cargoArtifacts serverArgs;
}
