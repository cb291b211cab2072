// Package plugintest builds Paddock's example handlers for tests that run them
// as real plugin subprocesses.
package plugintest
