package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// check verifies that every declared key's value parses as the key's type (the type
// of its Default), and passes its Check and OneOf. A value that does not is an error
// naming the key, the value, where it came from and the form wanted: never a silent
// zero or default. It returns every bad key at once.
func (c *Config) check() error {
	var errs []error
	for _, k := range keys {
		if err := c.checkKey(k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Config) checkKey(k Key) error {
	raw := c.V.Get(k.Name)
	bad := func(form string) error {
		return fmt.Errorf("config: %s = %s (from %s): %s", k.Name, show(raw), c.Source(k.Name), form)
	}
	switch k.Default.(type) {
	case time.Duration:
		d, ok := asDuration(raw)
		if !ok || d != c.V.GetDuration(k.Name) {
			return bad("want a duration: a number with a unit, such as 10s, 2m or 1h30m (units ns, us, ms, s, m, h)")
		}
		if d < 0 {
			return bad("want 0 or more")
		}
		if d == 0 && k.Positive {
			return bad(fmt.Sprintf("want more than 0 (leave the key out for the default, %v)", k.Default))
		}
	case int:
		n, ok := asInt(raw)
		if !ok || n != c.V.GetInt64(k.Name) {
			form := "want a whole number written in decimal digits, such as 4194304"
			if s, isStr := raw.(string); isStr && strings.IndexFunc(s, func(r rune) bool { return r >= 'A' && r <= 'z' }) >= 0 {
				form += " (no units: this key takes a plain number)"
			}
			return bad(form)
		}
		if n <= 0 && k.Positive {
			return bad(fmt.Sprintf("want more than 0 (leave the key out for the default, %v)", k.Default))
		}
	case float64:
		f, ok := asFloat(raw)
		if !ok || f != c.V.GetFloat64(k.Name) {
			return bad("want a number, such as 0.5 or 80")
		}
	case bool:
		b, ok := asBool(raw)
		if !ok || b != c.V.GetBool(k.Name) {
			return bad("want true or false")
		}
	case string:
		if !scalar(raw) {
			return bad("want a single value, not a list or a map")
		}
		s := c.V.GetString(k.Name)
		if len(k.OneOf) > 0 && !contains(k.OneOf, s) {
			return bad("want " + orList(k.OneOf))
		}
		if k.Check != nil {
			if err := k.Check(s); err != nil {
				return bad(err.Error())
			}
		}
	}
	return nil
}

// orList joins ["a", "b", "c"] as "a, b or c".
func orList(l []string) string {
	if len(l) < 2 {
		return strings.Join(l, "")
	}
	return strings.Join(l[:len(l)-1], ", ") + " or " + l[len(l)-1]
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%v", v)
}

func scalar(v any) bool {
	if v == nil {
		return true
	}
	switch reflect.TypeOf(v).Kind() {
	case reflect.Slice, reflect.Map, reflect.Array, reflect.Struct:
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// asDuration reads a duration: a time.Duration, a string time.ParseDuration takes,
// or the number 0.
func asDuration(v any) (time.Duration, bool) {
	switch x := v.(type) {
	case time.Duration:
		return x, true
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(x))
		return d, err == nil
	}
	if n, ok := asInt(v); ok && n == 0 {
		return 0, true
	}
	return 0, false
}

// asInt reads a whole number: an integer, an integral float, or decimal digits.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint:
		return int64(x), x <= math.MaxInt64
	case uint32:
		return int64(x), true
	case uint64:
		return int64(x), x <= math.MaxInt64
	case float64:
		return int64(x), x == math.Trunc(x) && math.Abs(x) < 1<<53
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// asFloat reads a number: an integer, a float, or a string strconv.ParseFloat takes.
func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	n, ok := asInt(v)
	return float64(n), ok
}

// asBool reads true or false: a bool, or a string strconv.ParseBool takes.
func asBool(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		return b, err == nil
	}
	return false, false
}
