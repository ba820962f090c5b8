# Everything the flake defines for one system, put together from one file per concern:
#   build.nix     crane, the source, the arguments every build shares, dependency artifacts
#   packages.nix  the server, the deploy tool, and image.nix, the server image
#   tools.nix     the Python clients, uv, cfn-lint and nextest the checks and the shell share
#   checks.nix    clippy, rustfmt, nextest, and cfn-lint.nix and replicas.nix
#   apps.nix      `nix run` targets, among them the integration suite outside the sandbox
#   devshell.nix  `nix develop`
# The server (and so its image, checks and apps) is Linux-only; on macOS there are the deploy
# tool, its app and the dev shell.
{ pkgs, crane }:
let
  inherit (pkgs.stdenv.hostPlatform) isLinux;

  build = import ./build.nix { inherit pkgs crane; };
  tools = import ./tools.nix { inherit pkgs; };
  packages = import ./packages.nix { inherit pkgs build; };
  checks =
    if isLinux
    then import ./checks.nix { inherit pkgs build tools packages; }
    else { };
in
{
  inherit packages checks;
  apps = import ./apps.nix { inherit pkgs packages; };
  devShells.default = import ./devshell.nix { inherit build tools checks; };
}
