// Command typeshandler is a tiny handler for the images tests: the task types it serves
// are set at link time (-ldflags "-X main.typeList=a.one,a.two"), or by the environment
// variable PADDOCK_TYPESHANDLER_TYPES (so one binary can describe itself differently);
// with PADDOCK_TYPESHANDLER_EXIT set, or -X main.exitAtStart=yes, it exits at start
// with status 3 after a line on stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/paddockvm/paddock/plugins/sdk"
)

var (
	typeList    = "tiny.one,tiny.two"
	exitAtStart = ""
)

type tiny struct{ types []string }

func (h tiny) Describe() []sdk.TaskType {
	var out []sdk.TaskType
	for _, n := range h.types {
		out = append(out, sdk.TaskType{Name: n, Version: "1.0.0", Concurrency: 2})
	}
	return out
}

func (tiny) Handle(_ context.Context, req sdk.Request) (sdk.Response, error) {
	return sdk.Response{Output: req.Payload}, nil
}

func main() {
	if exitAtStart != "" || os.Getenv("PADDOCK_TYPESHANDLER_EXIT") != "" {
		fmt.Fprintln(os.Stderr, "typeshandler: exiting at start, as asked")
		os.Exit(3)
	}
	list := typeList
	if v := os.Getenv("PADDOCK_TYPESHANDLER_TYPES"); v != "" {
		list = v
	}
	sdk.Serve(tiny{types: strings.Split(list, ",")})
}
