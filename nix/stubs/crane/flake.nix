# An offline stand-in for crane, used only by .ci/packaging-checks through
#   --override-input crane path:./nix/stubs/crane
# `mkLib pkgs` returns the functions nnmon's flake.nix calls, with crane's argument names
# and required arguments (e.g. cargoClippy and cargoNextest demand cargoArtifacts), and
# placeholder derivations as results. `filterCargoSources` keeps what crane's does (.rs,
# .toml, Cargo.lock, .cargo/config, directories), so the source filter is evaluated for real.
# Nothing here compiles anything: the placeholders fail if built.
{
  description = "Offline stand-in for the parts of crane that nnmon's flake uses";

  outputs =
    { self }:
    {
      mkLib =
        pkgs:
        let
          inherit (pkgs) system;

          hasSuffix =
            suffix: s:
            let
              ls = builtins.stringLength s;
              lx = builtins.stringLength suffix;
            in
            ls >= lx && builtins.substring (ls - lx) lx s == suffix;

          isEnvValue =
            v:
            builtins.isString v
            || builtins.isPath v
            || builtins.isBool v
            || builtins.isInt v
            || (builtins.isAttrs v && v ? outPath)
            || (builtins.isList v && builtins.all isEnvValue v);

          # Like crane's mkCargoDerivation: every argument lands in the derivation
          # (so `src` is filtered and copied to the store at evaluation time), and the
          # name is pname + suffix + version.
          placeholder =
            suffix: args:
            let
              pname = args.pname or "crate";
              version = args.version or "0.0.0";
              name = "${pname}${suffix}-${version}";
              envNames = builtins.filter (n: isEnvValue args.${n}) (builtins.attrNames args);
              env = builtins.listToAttrs (
                map (n: {
                  name = n;
                  value = args.${n};
                }) envNames
              );
              drv = derivation (
                env
                // {
                  inherit name system;
                  builder = "/bin/sh";
                  args = [
                    "-c"
                    "echo 'nix/stubs/crane: ${name} is a placeholder and cannot be built' >&2; exit 1"
                  ];
                }
              );
            in
            drv // builtins.removeAttrs args envNames;

          requireSrc =
            fn: args:
            if args ? src || args ? dummySrc then
              args
            else
              throw "crane stub: ${fn} needs `src` (or `dummySrc`)";
        in
        rec {
          filterCargoSources =
            orig_path: type:
            let
              path = toString orig_path;
              base = baseNameOf path;
              parent = baseNameOf (dirOf path);
            in
            type == "directory"
            || hasSuffix ".rs" base
            || hasSuffix ".toml" base
            || base == "Cargo.lock"
            || (parent == ".cargo" && base == "config");

          path =
            p:
            builtins.path {
              path = p;
              name = "source";
            };

          cleanCargoSource =
            src:
            builtins.path {
              path = src;
              filter = filterCargoSources;
              name = "source";
            };

          crateNameFromCargoToml =
            {
              src ? null,
              cargoToml ? src + "/Cargo.toml",
            }:
            let
              toml = builtins.fromTOML (builtins.readFile cargoToml);
            in
            {
              pname = toml.package.name or "crate";
              version = toml.package.version or "0.0.0";
            };

          buildDepsOnly = args: placeholder "-deps" (requireSrc "buildDepsOnly" args);

          buildPackage = args: placeholder "" (requireSrc "buildPackage" args);

          cargoBuild = { cargoArtifacts, ... }@args: placeholder "" (requireSrc "cargoBuild" args);

          cargoClippy =
            {
              cargoArtifacts,
              cargoClippyExtraArgs ? "--all-targets",
              ...
            }@args:
            placeholder "-clippy" (requireSrc "cargoClippy" args);

          cargoFmt =
            {
              cargoExtraArgs ? "",
              rustFmtExtraArgs ? "",
              ...
            }@args:
            placeholder "-fmt" (requireSrc "cargoFmt" args);

          cargoTest = { cargoArtifacts, ... }@args: placeholder "-test" (requireSrc "cargoTest" args);

          cargoDocTest =
            {
              cargoArtifacts,
              cargoTestExtraArgs ? "",
              ...
            }@args:
            placeholder "-doctest" (requireSrc "cargoDocTest" args);

          cargoNextest =
            {
              cargoArtifacts,
              cargoNextestExtraArgs ? "",
              partitions ? 1,
              partitionType ? "count",
              ...
            }@args:
            if partitions < 1 then
              throw "crane stub: partitions must be at least 1"
            else
              placeholder "-nextest" (requireSrc "cargoNextest" args);

          devShell =
            {
              packages ? [ ],
              ...
            }@args:
            placeholder "-shell" (builtins.removeAttrs args [ "packages" ] // { nativeBuildInputs = packages; });
        };
    };
}
