package vmpool

import "github.com/paddockvm/paddock/vmpool/hostload"

func hostloadCPU(pct float64) hostload.Thresholds { return hostload.Thresholds{CPUPercent: pct} }
