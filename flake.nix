{
  description = "nnmon: real-time monitoring of an ML model in production over RabbitMQ";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    crane.url = "github:ipetkov/crane";
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
    }:
    let
      inherit (nixpkgs) lib;

      # Explicit list (no flake-utils): the systems this flake is meant to work on.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system);

      # The services and the training job are subcommands of the one `nnmon` binary.
      subcommands = [
        "features"
        "model"
        "metric"
        "plot"
        "train"
      ];

      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);
      version = cargoToml.workspace.package.version;

      root = ./.;

      # The build sees only what cargo needs: the manifests and lock file, the Rust sources
      # under crates/, src/, tests/ and benches/, and the data files that the binary embeds
      # with include_str!/include_bytes! (crates/nnmon-model/data/*.csv, models/*.json, the
      # live page's assets) or that the tests read (proptest regression seeds). Everything else (target/, logs/, scripts, docs,
      # this flake) stays out, so editing it does not rebuild anything.
      sourceFilter =
        craneLib: path: type:
        let
          relative = lib.removePrefix (toString root + "/") (toString path);
          top = builtins.head (builtins.split "/" relative);
          matches = regex: builtins.match regex relative != null;
        in
        if
          builtins.elem relative [
            "Cargo.toml"
            "Cargo.lock"
          ]
        then
          true
        else if
          !(builtins.elem top [
            ".cargo"
            "crates"
            "src"
            "tests"
            "benches"
            "models"
          ])
        then
          false
        else
          craneLib.filterCargoSources path type
          || matches "crates/[^/]+/data/[^/]+\\.csv"
          || matches "models/[^/]+\\.json"
          || matches "src/services/plot/assets(/.*)?"
          || matches "crates/[^/]+/proptest-regressions/[^/]+\\.txt";

      perSystem =
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          craneLib = crane.mkLib pkgs;

          src = lib.cleanSourceWith {
            src = root;
            filter = sourceFilter craneLib;
            name = "nnmon-source";
          };

          # Shared by every cargo derivation so that they all reuse one dependency build.
          # Note: no `just` here; its setup hook would take over the build phases.
          commonArgs = {
            inherit src version;
            pname = "nnmon";
            strictDeps = true;
          };

          cargoArtifacts = craneLib.buildDepsOnly commonArgs;

          nnmon = craneLib.buildPackage (
            commonArgs
            // {
              inherit cargoArtifacts;
              # The tests run in checks.nnmon-tests (without a broker); no need to run them twice.
              doCheck = false;
              meta = {
                description = "Real-time monitoring of an ML model in production over RabbitMQ";
                mainProgram = "nnmon";
              };
            }
          );

          subcommandApp = sub: {
            type = "app";
            program = "${pkgs.writeShellScript "nnmon-${sub}" ''
              exec ${nnmon}/bin/nnmon ${sub} "$@"
            ''}";
            meta.description = "Run `nnmon ${sub}`";
          };
        in
        {
          packages = {
            default = nnmon;
            inherit nnmon;
          };

          apps = lib.genAttrs subcommands subcommandApp // {
            default = {
              type = "app";
              program = "${nnmon}/bin/nnmon";
              meta.description = "Run `nnmon` (pass the subcommand as an argument)";
            };
          };

          checks = {
            inherit nnmon;

            nnmon-clippy = craneLib.cargoClippy (
              commonArgs
              // {
                inherit cargoArtifacts;
                cargoClippyExtraArgs = "--workspace --all-targets -- --deny warnings";
              }
            );

            nnmon-fmt = craneLib.cargoFmt {
              inherit src version;
              pname = "nnmon";
              cargoExtraArgs = "--all";
            };

            # Every test target of every crate, with no broker: the tests that need RabbitMQ
            # see NNMON_SKIP_BROKER_TESTS=1, return early and log that they were skipped.
            nnmon-tests = craneLib.cargoNextest (
              commonArgs
              // {
                inherit cargoArtifacts;
                cargoNextestExtraArgs = "--workspace --no-fail-fast";
                NNMON_SKIP_BROKER_TESTS = "1";
              }
            );

            # nextest does not run doctests.
            nnmon-doctests = craneLib.cargoDocTest (
              commonArgs
              // {
                inherit cargoArtifacts;
                cargoTestExtraArgs = "--workspace";
                NNMON_SKIP_BROKER_TESTS = "1";
              }
            );
          };

          devShells.default = pkgs.mkShell {
            packages = with pkgs; [
              rustc
              cargo
              clippy
              rustfmt
              rust-analyzer
              just
              cargo-nextest
              cargo-criterion
              rabbitmq-server
            ];

            # A project-local RabbitMQ: `just up` / `just broker` start it with
            # `rabbitmq-server -detached` when nothing listens on 5672 yet. Its state lives
            # in ./.rabbitmq (git-ignored); `rabbitmqctl stop` stops it.
            shellHook = ''
              export NNMON_RABBITMQ_DIR="$PWD/.rabbitmq"
              export RABBITMQ_MNESIA_BASE="$NNMON_RABBITMQ_DIR/mnesia"
              export RABBITMQ_LOG_BASE="$NNMON_RABBITMQ_DIR/log"
              export RABBITMQ_PID_FILE="$NNMON_RABBITMQ_DIR/rabbitmq.pid"
              export RABBITMQ_ENABLED_PLUGINS_FILE="$NNMON_RABBITMQ_DIR/enabled_plugins"
              export RABBITMQ_NODENAME="nnmon@localhost"
              export RABBITMQ_NODE_IP_ADDRESS="127.0.0.1"
              export RABBITMQ_NODE_PORT="5672"
              mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
              # The consistent-hash exchange (bundled) for sharded pipelines (--shards N).
              [ -e "$RABBITMQ_ENABLED_PLUGINS_FILE" ] ||
                echo '[rabbitmq_consistent_hash_exchange].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
              export AMQP_URL="''${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
            '';
          };
        };

      bySystem = forAllSystems perSystem;
      collect = name: lib.genAttrs systems (system: bySystem.${system}.${name});
    in
    {
      packages = collect "packages";
      apps = collect "apps";
      checks = collect "checks";
      devShells = collect "devShells";
    };
}
