# The packages: `wheelhouse` (the server, the default) and `image` on Linux, and
# `wheelhouse-deploy` everywhere.
{ pkgs, build }:
let
  inherit (pkgs) lib;
  inherit (build) craneLib commonArgs cargoArtifacts serverArgs;

  wheelhouse = craneLib.buildPackage (serverArgs // {
    cargoArtifacts = craneLib.buildDepsOnly serverArgs;
    meta.mainProgram = "wheelhouse";
  });

  wheelhouse-deploy = craneLib.buildPackage (commonArgs // {
    inherit cargoArtifacts;
    pname = "wheelhouse-deploy";
    cargoExtraArgs = "--locked --bin wheelhouse-deploy";
    doCheck = false;
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
