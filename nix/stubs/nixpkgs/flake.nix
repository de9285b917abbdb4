# An offline stand-in for nixpkgs, used only by .ci/packaging-checks through
#   --override-input nixpkgs path:./nix/stubs/nixpkgs
# It offers just the attributes nnmon's flake.nix uses, with the same call shapes, so that
# `nix flake show` and `nix flake check --no-build` can evaluate the flake where nixpkgs
# cannot be downloaded. Packages are placeholder derivations that refuse to build.
{
  description = "Offline stand-in for the parts of nixpkgs that nnmon's flake uses";

  outputs =
    { self }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
        "x86_64-darwin"
      ];

      lib = rec {
        genAttrs =
          names: f:
          builtins.listToAttrs (
            map (name: {
              inherit name;
              value = f name;
            }) names
          );

        hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;

        hasSuffix =
          suffix: s:
          let
            ls = builtins.stringLength s;
            lx = builtins.stringLength suffix;
          in
          ls >= lx && builtins.substring (ls - lx) lx s == suffix;

        removePrefix =
          prefix: s:
          if hasPrefix prefix s then
            builtins.substring (builtins.stringLength prefix) (builtins.stringLength s) s
          else
            s;

        any = builtins.any;

        # Same contract as nixpkgs' cleanSourceWith for a plain path: the filter gets the
        # absolute path (as a string) and the file type; the result coerces to a store path.
        cleanSourceWith =
          {
            src,
            filter ? (_: _: true),
            name ? "source",
          }:
          {
            _isLibCleanSourceWith = true;
            origSrc = src;
            inherit filter name;
            outPath = builtins.path {
              path = src;
              inherit filter name;
            };
          };
      };

      # A derivation that evaluates like a package but fails if anyone tries to build it.
      # Attributes that are not strings, paths, derivations or lists of them (meta,
      # passthru) are kept on the result instead of going into the environment.
      placeholder =
        system: name: attrs:
        let
          isEnvValue =
            v:
            builtins.isString v
            || builtins.isPath v
            || builtins.isBool v
            || builtins.isInt v
            || (builtins.isAttrs v && v ? outPath)
            || (builtins.isList v && builtins.all isEnvValue v);
          env = lib.genAttrs (builtins.filter (n: isEnvValue attrs.${n}) (builtins.attrNames attrs)) (
            n: attrs.${n}
          );
          drv = derivation (
            env
            // {
              inherit name system;
              builder = "/bin/sh";
              args = [
                "-c"
                "echo 'nix/stubs/nixpkgs: ${name} is a placeholder and cannot be built' >&2; exit 1"
              ];
            }
          );
        in
        drv // builtins.removeAttrs attrs (builtins.attrNames env);

      pkgsFor =
        system:
        let
          package = pname: placeholder system "${pname}-stub" { meta.mainProgram = pname; };
          names = [
            "rustc"
            "cargo"
            "clippy"
            "rustfmt"
            "rust-analyzer"
            "just"
            "cargo-nextest"
            "cargo-criterion"
            "rabbitmq-server"
          ];
        in
        lib.genAttrs names package
        // {
          inherit lib system;
          stdenv = {
            hostPlatform = {
              inherit system;
              isDarwin = lib.hasSuffix "-darwin" system;
              isLinux = lib.hasSuffix "-linux" system;
            };
            isDarwin = lib.hasSuffix "-darwin" system;
            isLinux = lib.hasSuffix "-linux" system;
          };

          mkShell =
            {
              packages ? [ ],
              ...
            }@args:
            placeholder system (args.name or "nix-shell") (
              builtins.removeAttrs args [ "packages" ] // { nativeBuildInputs = packages; }
            );

          writeShellScript =
            name: text:
            placeholder system name {
              inherit text;
              executable = true;
            };
        };
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems pkgsFor;
    };
}
