package postgres

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Merging: the writes of a batch that have the same statement text (a submit without
// blobs, a report of the same shape) become one statement over arrays of their
// arguments, as River's completer marks many jobs done in one UPDATE … FROM unnest:
// PostgreSQL sets up one statement instead of many. The merged writes change distinct
// tasks (writeOp.uniq), so running them in one statement is the same as running them
// one after another; each gets the row of its task back (or none: a conflict).

// mergeKind says how a statement is rewritten over the rows of v.
type mergeKind int

const (
	noMerge     mergeKind = iota
	mergeInsert           // INSERT … VALUES ($1, …) → INSERT … SELECT v.p1, … FROM v
	mergeUpdate           // UPDATE tasks SET … WHERE id = $1 … → … FROM v WHERE id = v.p1 …, and the attempt's CTE joins v
)

var paramRE = regexp.MustCompile(`\$([0-9]+)(::text\[\])?`)

// mergedQuery returns the statement that runs q once for each argument list in args
// (all of q's shape), or ok false when they cannot be merged.
func mergedQuery(kind mergeKind, q string, args [][]any) (string, []any, bool) {
	n := len(args[0])
	cols := make([]string, n)
	arrays := make([]any, n)
	params := make([]string, n)
	for i := range n {
		typ, arr, ok := column(args, i)
		if !ok {
			return "", nil, false
		}
		arrays[i], cols[i] = arr, "p"+strconv.Itoa(i+1)
		params[i] = fmt.Sprintf("$%d::%s[]", i+1, typ)
	}
	body := paramRE.ReplaceAllStringFunc(q, func(m string) string {
		sub := paramRE.FindStringSubmatch(m)
		if sub[2] != "" { // a text[] argument, sent as its elements joined by commas
			return "string_to_array(v.p" + sub[1] + ", ',')"
		}
		return "v.p" + sub[1]
	})
	v := `v AS (SELECT * FROM unnest(` + strings.Join(params, ", ") + `) AS v(` + strings.Join(cols, ", ") + `))`
	switch kind {
	case mergeInsert:
		i := strings.Index(body, " VALUES (")
		j := strings.Index(body, ")\n ON CONFLICT")
		if i < 0 || j < i || strings.HasPrefix(body, "WITH") {
			return "", nil, false
		}
		body = body[:i] + " SELECT " + body[i+len(" VALUES ("):j] + " FROM v" + body[j+1:]
		return "WITH " + v + " " + body, arrays, true
	case mergeUpdate:
		const where = " WHERE id = v.p1 "
		if strings.Count(body, where) != 1 {
			return "", nil, false
		}
		body = strings.Replace(body, where, " FROM v"+where, 1)
		if rest, ok := strings.CutPrefix(body, "WITH upd AS ("); ok {
			const att = " FROM upd WHERE a.task_id = upd.id "
			if strings.Count(rest, att) != 1 {
				return "", nil, false
			}
			rest = strings.Replace(rest, att, " FROM upd JOIN v ON v.p1 = upd.id WHERE a.task_id = upd.id ", 1)
			return "WITH " + v + ", upd AS (" + rest, arrays, true
		}
		if !strings.HasPrefix(body, "UPDATE tasks SET ") {
			return "", nil, false
		}
		return "WITH " + v + " " + body, arrays, true
	}
	return "", nil, false
}

// column returns the PostgreSQL type and the array of argument i of every list in
// args, or ok false for a Go type it does not know or lists that disagree.
func column(args [][]any, i int) (string, any, bool) {
	switch args[0][i].(type) {
	case string:
		return gather[string](args, i, "text", func(v string) (string, bool) { return v, true })
	case int64:
		return gather[int64](args, i, "int8", func(v int64) (int64, bool) { return v, true })
	case int:
		return gather[int](args, i, "int8", func(v int) (int64, bool) { return int64(v), true })
	case bool:
		return gather[bool](args, i, "bool", func(v bool) (bool, bool) { return v, true })
	case []byte:
		return gather[[]byte](args, i, "bytea", func(v []byte) ([]byte, bool) { return v, true })
	case []string:
		return gather[[]string](args, i, "text", func(v []string) (string, bool) {
			for _, s := range v {
				if s == "" || strings.Contains(s, ",") {
					return "", false
				}
			}
			return strings.Join(v, ","), len(v) > 0
		})
	}
	return "", nil, false
}

// gather converts argument i of every list with conv into one array.
func gather[T, E any](args [][]any, i int, typ string, conv func(T) (E, bool)) (string, any, bool) {
	out := make([]E, len(args))
	for j, a := range args {
		v, ok := a[i].(T)
		if !ok {
			return "", nil, false
		}
		if out[j], ok = conv(v); !ok {
			return "", nil, false
		}
	}
	return typ, out, true
}
