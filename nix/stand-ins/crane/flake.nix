# STAND-IN, FOR OFFLINE CHECKS ONLY. This is not crane and builds nothing: it makes its
# derivations with the nixpkgs stand-in beside it, whose builders fail. .ci/nix-check passes it
# with `--override-input crane path:.../nix/stand-ins/crane` so that `nix flake check
# --no-build` and `nix eval` can run where crane cannot be fetched; a real build always uses
# the crane pinned in flake.lock.
#
# It stands in for exactly what nix/*.nix uses, following crane's lib/*.nix (argument names
# and defaults, what each passes on to mkDerivation, the derivation names):
#   mkLib pkgs -> buildDepsOnly buildPackage cargoClippy cargoFmt cargoNextest devShell
#                 fileset.commonCargoSources
#   and, used by those as in crane: crateNameFromCargoToml vendorCargoDeps mkCargoDerivation
# Differences: buildDepsOnly does not replace the sources with dummies, vendorCargoDeps only
# reads Cargo.lock (every registry package must have a checksum, as crane requires), and
# cargoNextest does not split into partitions.
{
  description = "Offline stand-in for crane, for .ci/nix-check only";

  outputs = _: {
    mkLib = pkgs:
      let
        inherit (pkgs) lib;

        origSrc = src: if src._isLibCleanSourceWith or false then src.origSrc else src;

        crateNameFromCargoToml = args:
          let
            src = origSrc (args.src or (throw "crateNameFromCargoToml: no src"));
            toml = builtins.fromTOML (builtins.readFile (args.cargoToml or (src + "/Cargo.toml")));
            package = toml.package or { };
          in
          {
            pname = package.name or toml.workspace.metadata.crane.name or "cargo-package";
            version = package.version or toml.workspace.package.version or "0.0.1";
          };

        vendorCargoDeps = args:
          let
            src = origSrc (args.src or (throw "vendorCargoDeps: unable to find `src`"));
            cargoLock = args.cargoLock or (src + "/Cargo.lock");
            parsed =
              if builtins.pathExists cargoLock
              then builtins.fromTOML (builtins.readFile cargoLock)
              else throw "vendorCargoDeps: unable to find Cargo.lock at ${toString src}";
            cratesIo = "registry+https://github.com/rust-lang/crates.io-index";
            fromRegistry = builtins.filter (p: (p.source or null) == cratesIo) parsed.package;
            unchecked = builtins.filter (p: !(p ? checksum)) fromRegistry;
          in
          if unchecked != [ ]
          then throw "vendorCargoDeps: no checksum for ${(builtins.head unchecked).name} in Cargo.lock"
          else
            pkgs.stdenv.mkDerivation {
              name = "vendor-cargo-deps";
              crates = map (p: "${p.name}-${p.version}") fromRegistry;
            };

        mkCargoDerivation =
          { cargoArtifacts
          , buildPhaseCargoCommand
          , checkPhaseCargoCommand ? ""
          , installPhaseCommand ? "mkdir -p $out"
          , ...
          }@args:
          let
            crateName = crateNameFromCargoToml args;
            cleaned = builtins.removeAttrs args [
              "buildPhaseCargoCommand"
              "checkPhaseCargoCommand"
              "installPhaseCommand"
              "pnameSuffix"
              "outputHashes"
              "stdenv"
            ];
          in
          pkgs.stdenv.mkDerivation (cleaned // {
            inherit cargoArtifacts;
            pname = "${args.pname or crateName.pname}${args.pnameSuffix or ""}";
            version = args.version or crateName.version;
            doInstallCargoArtifacts = args.doInstallCargoArtifacts or true;
            cargoVendorDir = args.cargoVendorDir or (vendorCargoDeps args);
            nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ [ pkgs.cargo pkgs.rustc ];
            buildPhase = args.buildPhase or "cargo --version\n${buildPhaseCargoCommand}";
            checkPhase = args.checkPhase or checkPhaseCargoCommand;
            installPhase = args.installPhase or installPhaseCommand;
          });

        buildDepsOnly =
          { cargoBuildCommand ? "cargoWithProfile build"
          , cargoCheckCommand ? "cargoWithProfile check"
          , cargoExtraArgs ? "--locked"
          , cargoBuildExtraArgs ? ""
          , cargoTestCommand ? "cargoWithProfile test"
          , cargoTestExtraArgs ? "--no-run"
          , ...
          }@args:
          let
            cleaned = builtins.removeAttrs args [
              "cargoBuildCommand"
              "cargoCheckCommand"
              "cargoCheckExtraArgs"
              "cargoExtraArgs"
              "cargoBuildExtraArgs"
              "cargoTestCommand"
              "cargoTestExtraArgs"
              "outputHashes"
              "dummySrc"
              "outputs"
            ];
            doCheck = args.doCheck or true;
            cargoCheckExtraArgs = args.cargoCheckExtraArgs or (if doCheck then "--all-targets" else "");
            crateName = crateNameFromCargoToml args;
          in
          mkCargoDerivation (cleaned // {
            inherit doCheck;
            pnameSuffix = "-deps";
            pname = args.pname or crateName.pname;
            version = args.version or crateName.version;
            cargoArtifacts = null;
            cargoVendorDir = args.cargoVendorDir or (vendorCargoDeps args);
            env = (args.env or { }) // { CRANE_BUILD_DEPS_ONLY = 1; };
            buildPhaseCargoCommand = args.buildPhaseCargoCommand or ''
              ${cargoCheckCommand} ${cargoExtraArgs} ${cargoCheckExtraArgs}
              ${cargoBuildCommand} ${cargoExtraArgs} ${cargoBuildExtraArgs}
            '';
            checkPhaseCargoCommand = args.checkPhaseCargoCommand or ''
              ${cargoTestCommand} ${cargoExtraArgs} ${cargoTestExtraArgs}
            '';
            doInstallCargoArtifacts = true;
          });

        buildPackage =
          { cargoBuildCommand ? "cargoWithProfile build"
          , cargoExtraArgs ? "--locked"
          , cargoBuildExtraArgs ? ""
          , cargoTestCommand ? "cargoWithProfile test"
          , cargoTestExtraArgs ? ""
          , ...
          }@args:
          let
            crateName = crateNameFromCargoToml args;
            cleaned = builtins.removeAttrs args [
              "cargoBuildCommand"
              "cargoExtraArgs"
              "cargoBuildExtraArgs"
              "cargoTestCommand"
              "cargoTestExtraArgs"
              "outputHashes"
            ];
            memoized = {
              pname = args.pname or crateName.pname;
              version = args.version or crateName.version;
              cargoVendorDir = args.cargoVendorDir or (vendorCargoDeps args);
            };
          in
          mkCargoDerivation (cleaned // memoized // {
            doCheck = args.doCheck or true;
            doInstallCargoArtifacts = args.doInstallCargoArtifacts or false;
            cargoArtifacts = args.cargoArtifacts or (buildDepsOnly (args // memoized));
            buildPhaseCargoCommand = args.buildPhaseCargoCommand or ''
              cargoBuildLog=$(mktemp cargoBuildLogXXXX.json)
              ${cargoBuildCommand} --message-format json-render-diagnostics ${cargoExtraArgs} ${cargoBuildExtraArgs} >"$cargoBuildLog"
            '';
            checkPhaseCargoCommand = args.checkPhaseCargoCommand or ''
              ${cargoTestCommand} ${cargoExtraArgs} ${cargoTestExtraArgs}
            '';
          });

        cargoClippy =
          { cargoArtifacts
          , cargoClippyExtraArgs ? "--all-targets"
          , cargoExtraArgs ? "--locked"
          , ...
          }@args:
          mkCargoDerivation (builtins.removeAttrs args [ "cargoClippyExtraArgs" "cargoExtraArgs" ] // {
            inherit cargoArtifacts;
            pnameSuffix = "-clippy";
            buildPhaseCargoCommand = "cargoWithProfile clippy ${cargoExtraArgs} ${cargoClippyExtraArgs}";
            nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ [ pkgs.clippy ];
          });

        cargoFmt =
          { cargoExtraArgs ? ""
          , rustFmtExtraArgs ? ""
          , ...
          }@args:
          mkCargoDerivation (builtins.removeAttrs args [ "cargoExtraArgs" "rustFmtExtraArgs" ] // {
            cargoArtifacts = null;
            cargoVendorDir = null;
            pnameSuffix = "-fmt";
            buildPhaseCargoCommand = "cargo fmt ${cargoExtraArgs} -- --check ${rustFmtExtraArgs}";
            nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ [ pkgs.rustfmt ];
          });

        cargoNextest =
          { cargoArtifacts
          , cargoExtraArgs ? ""
          , cargoNextestExtraArgs ? ""
          , cargoNextestPartitionsExtraArgs ? ""
          , partitions ? 1
          , ...
          }@origArgs:
          let
            args = builtins.removeAttrs origArgs [
              "cargoExtraArgs"
              "cargoLlvmCovExtraArgs"
              "cargoNextestExtraArgs"
              "cargoNextestPartitionsExtraArgs"
              "partitions"
              "partitionType"
              "withLlvmCov"
            ];
          in
          if partitions != 1
          then throw "cargoNextest (stand-in): only partitions = 1 is stood in for"
          else
            mkCargoDerivation (args // {
              inherit cargoArtifacts;
              pnameSuffix = "-nextest";
              doCheck = args.doCheck or true;
              env = { NEXTEST_SHOW_PROGRESS = args.NEXTEST_SHOW_PROGRESS or "counter"; } // (args.env or { });
              buildPhaseCargoCommand = args.buildPhaseCargoCommand or ''
                mkdir -p $out
                cargo nextest --version
              '';
              checkPhaseCargoCommand = ''
                cargo nextest run ''${CARGO_PROFILE:+--cargo-profile $CARGO_PROFILE} \
                  ${cargoExtraArgs} ${cargoNextestExtraArgs} ${cargoNextestPartitionsExtraArgs}
              '';
              nativeBuildInputs = (args.nativeBuildInputs or [ ]) ++ [ pkgs.cargo-nextest ];
            });

        devShell =
          { checks ? { }
          , inputsFrom ? [ ]
          , packages ? [ ]
          , ...
          }@args:
          pkgs.mkShell (builtins.removeAttrs args [ "checks" "inputsFrom" "nativeBuildInputs" ] // {
            inputsFrom = builtins.attrValues checks ++ inputsFrom;
            packages = [ pkgs.rustc pkgs.cargo pkgs.clippy pkgs.rustfmt ] ++ packages;
          });

        fileset = {
          commonCargoSources = path: lib.fileset.unions [
            (lib.fileset.fileFilter (file: lib.elem file.name [ "Cargo.toml" "Cargo.lock" ]) path)
            (lib.fileset.fileFilter (file: file.hasExt "rs") path)
            (lib.fileset.fileFilter (file: file.hasExt "toml") path)
          ];
        };
      in
      {
        inherit buildDepsOnly buildPackage cargoClippy cargoFmt cargoNextest devShell fileset;
        inherit crateNameFromCargoToml vendorCargoDeps mkCargoDerivation;
      };
  };
}
