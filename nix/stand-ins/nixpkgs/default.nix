# STAND-IN, FOR OFFLINE CHECKS ONLY (see flake.nix beside it): what `import nixpkgs { ... }`
# gives, the stand-in package set of one system. Like the real one it takes only `system`,
# `config` (an attribute set) and `overlays`; the configuration changes nothing here.
{ system, config ? { }, overlays ? [ ] }:
assert builtins.isAttrs config && builtins.isList overlays;
((import ./flake.nix).outputs { }).legacyPackages.${system}
