{
  description = "wheelhouse: a private Python package index, and the tool that deploys it to AWS";

  inputs = {
    # 26.05 is the last nixpkgs release that still builds for x86_64-darwin, and it ships
    # rustc 1.95.0 (Cargo.toml asks for 1.94.1).
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
  };

  outputs = { nixpkgs, crane, ... }:
    let
      inherit (nixpkgs) lib;

      # The server, its image and the checks are Linux-only; the deploy tool and the dev shell
      # also run on macOS. nix/default.nix decides what each system gets.
      linux = [ "x86_64-linux" "aarch64-linux" ];
      systems = linux ++ [ "x86_64-darwin" "aarch64-darwin" ];

      # 26.05 warns at every evaluation for x86_64-darwin, whose support ends with it; the flake
      # pins 26.05 to keep offering that system (see the input above), so it says it knows.
      pkgsFor = system:
        if system == "x86_64-darwin"
        then import nixpkgs { inherit system; config.allowDeprecatedx86_64Darwin = true; }
        else nixpkgs.legacyPackages.${system};

      forSystem = system:
        import ./nix {
          pkgs = pkgsFor system;
          inherit crane;
        };
      bySystem = lib.genAttrs systems forSystem;
      output = name: lib.genAttrs systems (system: bySystem.${system}.${name});
    in
    {
      packages = output "packages";
      apps = output "apps";
      checks = lib.genAttrs linux (system: bySystem.${system}.checks);
      devShells = output "devShells";
    };
}
