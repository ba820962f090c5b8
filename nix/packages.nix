# The packages: `wheelhouse` (the server, the default) and `image` on Linux, and
# `wheelhouse-deploy` everywhere.
{ pkgs, build }:
let
  inherit (pkgs) lib;
  inherit (build) craneLib commonArgs serverArgs;

  wheelhouse = craneLib.buildPackage (serverArgs // {
    cargoArtifacts = craneLib.buildDepsOnly serverArgs;
    meta.mainProgram = "wheelhouse";
  });

  # Its own dependency build: the binary's dependencies only, without the test dependencies
  # (wiremock, testcontainers, ...) the workspace's shared artifacts carry, so that
  # `nix run .#deploy` builds no more than it runs.
  deployArgs = commonArgs // {
    pname = "wheelhouse-deploy";
    cargoExtraArgs = "--locked --bin wheelhouse-deploy";
    doCheck = false;
  };

  wheelhouse-deploy = craneLib.buildPackage (deployArgs // {
    cargoArtifacts = craneLib.buildDepsOnly deployArgs;
    meta.mainProgram = "wheelhouse-deploy";
  });
in
{
  inherit wheelhouse-deploy;
} // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
  inherit wheelhouse;
  default = wheelhouse;
  image = import ./image.nix { inherit pkgs build; };
}
