// Package cli is the `paddock` command tree (cobra), with configuration through
// internal/config (viper: paddock.yaml, PADDOCK_* variables, flags) and logs through
// log/slog. cmd/paddock/main.go only wires signals and exit codes to Execute.
//
// Each command group lives in its own file and adds itself with addCommand in an init
// function, so groups owned by different packages' authors never edit the same file.
package cli
