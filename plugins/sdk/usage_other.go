//go:build !unix

package sdk

const cpuUsageSupported = false

func cpuTime() int64 { return -1 }
