// Package api holds the .proto definitions of the client API and of the agent protocol,
// with their generated code. The handler protocol lives in package plugins so that
// handler authors need nothing from here.
package api
