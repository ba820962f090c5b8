# STAND-IN, FOR OFFLINE CHECKS ONLY. This is not nixpkgs and builds nothing: every derivation
# it makes has a builder that fails. .ci/nix-check passes it with
# `--override-input nixpkgs path:.../nix/stand-ins/nixpkgs` so that `nix flake check --no-build`
# and `nix eval` can run where nixpkgs cannot be fetched; a real build always uses the nixpkgs
# pinned in flake.lock.
#
# It stands in for exactly what nix/*.nix and the crane stand-in use, with the real names,
# argument names and result shapes (functions that take a fixed set of arguments refuse any
# other, as the real ones do):
#   lib: genAttrs optionalAttrs optionals elem concatStringsSep concatMapStringsSep
#        escapeShellArg fileset.toSource fileset.unions fileset.fileFilter
#   legacyPackages.<system>:
#     lib
#     stdenv.hostPlatform.{system,isLinux,isDarwin,rust.rustcTarget} stdenv.cc
#     stdenv.mkDerivation mkShell runCommand writeShellApplication
#     dockerTools.buildLayeredImage
#     python3.withPackages python3Packages.{pip,twine,build,cfn-lint}
#     cargo rustc clippy rustfmt cargo-nextest uv docker-client git libiconv glibc.static
#     coreutils gawk util-linux debootstrap
#   for x86_64-linux, aarch64-linux, x86_64-darwin and aarch64-darwin (glibc and debootstrap on
#   Linux only).
{
  description = "Offline stand-in for nixpkgs, for .ci/nix-check only";

  outputs = _:
    let
      hasPrefix = prefix: string:
        builtins.substring 0 (builtins.stringLength prefix) string == prefix;
      hasSuffix = suffix: string:
        let
          length = builtins.stringLength string;
          suffixLength = builtins.stringLength suffix;
        in
        length >= suffixLength
        && builtins.substring (length - suffixLength) suffixLength string == suffix;

      # A file set is a predicate on (absolute path, type); for a directory it tells whether the
      # set may hold something inside it.
      fileSet = includes: { _type = "fileset"; inherit includes; };
      existingPath = value:
        if builtins.pathExists value
        then toString value
        else throw "lib.fileset: ${toString value} does not exist";
      pathFileSet = value:
        let path = existingPath value; in
        fileSet (file: type:
          file == path
          || hasPrefix "${path}/" file
          || (type == "directory" && hasPrefix "${file}/" path));
      coerceFileSet = value:
        if value._type or null == "fileset" then value
        else if builtins.isPath value then pathFileSet value
        else throw "lib.fileset: expected a path or a file set";

      lib = {
        genAttrs = names: f:
          builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
        optionalAttrs = condition: attrs: if condition then attrs else { };
        optionals = condition: list: if condition then list else [ ];
        inherit (builtins) elem concatStringsSep;
        concatMapStringsSep = separator: f: list:
          builtins.concatStringsSep separator (map f list);
        escapeShellArg = arg:
          let string = toString arg; in
          if builtins.match "[[:alnum:],._+:@%/-]+" string == null
          then "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] string}'"
          else string;

        fileset = {
          # As lib.fileset.toSource: a cleanSourceWith result, whose outPath is the store copy.
          toSource = { root, fileset }:
            let
              set = coerceFileSet fileset;
              filter = file: type: set.includes file type;
            in
            {
              _isLibCleanSourceWith = true;
              origSrc = root;
              inherit filter;
              name = "source";
              outPath = builtins.path { path = root; name = "source"; inherit filter; };
            };
          unions = sets:
            let coerced = map coerceFileSet sets; in
            fileSet (file: type: builtins.any (set: set.includes file type) coerced);
          # The predicate sees { name, type, hasExt } of each file under `path`.
          fileFilter = predicate: path:
            let
              root = existingPath path;
              matches = file: type: predicate {
                name = baseNameOf file;
                inherit type;
                hasExt = ext: hasSuffix ".${ext}" (baseNameOf file);
              };
            in
            fileSet (file: type:
              hasPrefix "${root}/" file && (type == "directory" || matches file type));
        };
      };

      # Values builtins.derivation can take: what mkDerivation turns into environment variables.
      # Everything else (functions, plain attribute sets) stays on the result only.
      isEnvValue = value:
        let type = builtins.typeOf value; in
        builtins.elem type [ "string" "path" "int" "float" "bool" "null" ]
        || (type == "set" && value ? outPath)
        || (type == "list" && builtins.all isEnvValue value);

      derivationFor = system: attrs:
        let
          env = (attrs.env or { }) // builtins.removeAttrs attrs [ "env" "meta" "passthru" ];
          kept = builtins.filter (name: isEnvValue env.${name}) (builtins.attrNames env);
          keptEnv = builtins.listToAttrs (map (name: { inherit name; value = env.${name}; }) kept);
          fail = "echo 'stand-in derivation (nix/stand-ins): nothing can be built with it' >&2; exit 1";
          drv = builtins.derivation (keptEnv // {
            inherit system;
            name = attrs.name or "${attrs.pname}-${attrs.version}";
            builder = "/bin/sh";
            args = [ "-c" fail ];
          });
        in
        drv // { meta = attrs.meta or { }; } // (attrs.passthru or { });

      # Calls of functions with a fixed set of arguments: unknown or missing ones are errors.
      checkArgs = function: required: optional: args:
        let
          known = name: builtins.elem name (required ++ optional);
          unknown = builtins.filter (name: !(known name)) (builtins.attrNames args);
          missing = builtins.filter (name: !(args ? ${name})) required;
          names = builtins.concatStringsSep ", ";
        in
        if unknown != [ ] then throw "${function}: unexpected argument(s) ${names unknown}"
        else if missing != [ ] then throw "${function}: missing argument(s) ${names missing}"
        else args;

      writeShellApplicationArgs = [
        "runtimeInputs"
        "runtimeEnv"
        "meta"
        "passthru"
        "checkPhase"
        "excludeShellChecks"
        "extraShellCheckFlags"
        "bashOptions"
        "derivationArgs"
        "inheritPath"
        "libraryPath"
        "inheritLibraryPath"
      ];

      buildLayeredImageArgs = [
        "tag"
        "fromImage"
        "contents"
        "config"
        "architecture"
        "created"
        "mtime"
        "uid"
        "gid"
        "uname"
        "gname"
        "maxLayers"
        "extraCommands"
        "fakeRootCommands"
        "enableFakechroot"
        "includeStorePaths"
        "includeNixDB"
        "passthru"
        "meta"
        "layeringPipeline"
        "debug"
      ];

      rustcTargets = {
        x86_64-linux = "x86_64-unknown-linux-gnu";
        aarch64-linux = "aarch64-unknown-linux-gnu";
        x86_64-darwin = "x86_64-apple-darwin";
        aarch64-darwin = "aarch64-apple-darwin";
      };

      pkgsFor = system:
        let
          isLinux = hasSuffix "-linux" system;
          mkDerivation = derivationFor system;
          package = pname: version: mkDerivation { inherit pname version; };

          python3Packages = {
            pip = package "python3.13-pip" "26.0";
            twine = package "python3.13-twine" "6.2.0";
            build = package "python3.13-build" "1.3.0";
            cfn-lint = package "python3.13-cfn-lint" "1.40.0";
          };
        in
        {
          inherit lib python3Packages;

          stdenv = {
            hostPlatform = {
              inherit system isLinux;
              isDarwin = hasSuffix "-darwin" system;
              rust.rustcTarget = rustcTargets.${system};
            };
            cc = package "gcc-wrapper" "15.2.0";
            inherit mkDerivation;
          };

          # As pkgs/build-support/mkshell: the inputs of `inputsFrom` join the shell's own.
          mkShell = { name ? "nix-shell", packages ? [ ], inputsFrom ? [ ], ... }@attrs:
            let
              notAnInput = input: !(builtins.elem input inputsFrom);
              fromInputs = kind: builtins.concatMap (input: input.${kind} or [ ]) inputsFrom;
              merge = kind: (attrs.${kind} or [ ]) ++ builtins.filter notAnInput (fromInputs kind);
            in
            mkDerivation (builtins.removeAttrs attrs [ "packages" "inputsFrom" ] // {
              inherit name;
              buildInputs = merge "buildInputs";
              nativeBuildInputs = packages ++ merge "nativeBuildInputs";
              propagatedBuildInputs = merge "propagatedBuildInputs";
              propagatedNativeBuildInputs = merge "propagatedNativeBuildInputs";
            });

          runCommand = name: env: buildCommand:
            if builtins.isAttrs env
            then mkDerivation (env // { inherit name buildCommand; })
            else throw "runCommand: the environment must be an attribute set";

          writeShellApplication = args:
            let
              checked = checkArgs "writeShellApplication" [ "name" "text" ] writeShellApplicationArgs args;
            in
            mkDerivation {
              inherit (checked) name text;
              runtimeInputs = checked.runtimeInputs or [ ];
              meta = { mainProgram = checked.name; } // checked.meta or { };
            };

          dockerTools.buildLayeredImage = args:
            let
              checked = checkArgs "dockerTools.buildLayeredImage" [ "name" ] buildLayeredImageArgs args;
              tag = checked.tag or null;
            in
            mkDerivation {
              name = "${baseNameOf checked.name}.tar.gz";
              contents = checked.contents or [ ];
              # The image configuration, as the real builder writes it: it has to be JSON.
              config = builtins.toJSON (checked.config or { });
              extraCommands = checked.extraCommands or "";
              fakeRootCommands = checked.fakeRootCommands or "";
              includeStorePaths = checked.includeStorePaths or true;
              passthru = {
                imageName = checked.name;
                imageTag = if tag == null then "stand-in" else tag;
              };
            };

          python3 = package "python3" "3.13.9" // {
            withPackages = select:
              mkDerivation {
                name = "python3-3.13.9-env";
                paths = select python3Packages;
              };
          };

          cargo = package "cargo" "1.95.0";
          rustc = package "rustc" "1.95.0";
          clippy = package "clippy" "1.95.0";
          rustfmt = package "rustfmt" "1.95.0";
          cargo-nextest = package "cargo-nextest" "0.9.100";
          uv = package "uv" "0.9.0";
          docker-client = package "docker-client" "28.0.0";
          git = package "git" "2.51.0";
          coreutils = package "coreutils" "9.8";
          gawk = package "gawk" "5.3.2";
          util-linux = package "util-linux" "2.41.2";
          debootstrap =
            if isLinux
            then package "debootstrap" "1.0.141"
            else throw "debootstrap is not available on ${system} (stand-in)";
          libiconv = package "libiconv" "109";
          glibc =
            if isLinux
            then package "glibc" "2.42" // { static = package "glibc-static" "2.42"; }
            else throw "glibc is not available on ${system} (stand-in)";
        };
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs (builtins.attrNames rustcTargets) pkgsFor;
    };
}
