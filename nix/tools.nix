# The tools the checks run and the dev shell offers, all from nixpkgs.
{ pkgs }:
{
  # The real clients the index is tested against (pip, twine, build); uv is its own package.
  python = pkgs.python3.withPackages (ps: [ ps.pip ps.twine ps.build ]);
  inherit (pkgs) uv cargo-nextest;
  cfn-lint = pkgs.python3Packages.cfn-lint;
}
