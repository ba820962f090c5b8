# `nix develop`: nixpkgs' toolchain (cargo, rustc, clippy, rustfmt), everything the checks
# build with, and the tools they run: cargo-nextest, Python with pip, twine and build, uv and
# cfn-lint. The checks' inputs come along, not their outputs: entering the shell builds nothing
# of wheelhouse itself.
{ build, tools, checks }:
build.craneLib.devShell {
  inherit checks;
  packages = [ tools.cargo-nextest tools.python tools.uv tools.cfn-lint ];
}
