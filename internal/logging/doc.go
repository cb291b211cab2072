// Package logging builds Paddock's slog loggers: text on a terminal, JSON otherwise.
package logging
