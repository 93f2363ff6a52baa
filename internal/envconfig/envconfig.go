// Package envconfig fills a binary's typed configuration struct from
// environment variables, so every process reads its settings the same way and
// tests can list the variables a binary reads (Vars) to check that the local
// stack, docker-compose.yaml and the Kubernetes manifests set exactly those.
//
// Fields are described by struct tags:
//
//	DSN     string        `env:"PG_EXTERNAL_DSN" required:"true" secret:"true" doc:"..."`
//	Listen  string        `env:"EXTERNAL_LISTEN_ADDR" default:"127.0.0.1:30001" doc:"..."`
//	Wait    time.Duration `env:"FEED_WAIT" default:"25s"`
//	Origins []string      `env:"ALLOWED_ORIGINS"` // comma-separated
//
// Supported field types: string, bool, int, int64, float64, time.Duration, []string.
package envconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Var describes one environment variable a configuration struct reads.
type Var struct {
	Name     string
	Default  string
	Required bool
	Secret   bool
	Doc      string
}

// Load sets each tagged field of the struct cfg points to from its variable,
// or its default. It reports every missing required variable and every value
// that does not parse, naming the variables.
func Load(cfg any) error { return load(cfg, os.LookupEnv) }

func load(cfg any, lookup func(string) (string, bool)) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("envconfig: Load needs a pointer to a struct")
	}
	v = v.Elem()
	var errs []error
	for i, f := range fields(v.Type()) {
		if f.Name == "" {
			continue
		}
		raw, ok := lookup(f.Name)
		if !ok || raw == "" {
			if f.Required {
				errs = append(errs, fmt.Errorf("%s is required (%s)", f.Name, f.Doc))
				continue
			}
			raw = f.Default
		}
		if err := set(v.Field(i), raw); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", f.Name, maskIf(f.Secret, raw), err))
		}
	}
	return errors.Join(errs...)
}

// Vars lists the variables of a configuration struct (or pointer to one).
func Vars(cfg any) []Var {
	t := reflect.TypeOf(cfg)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []Var
	for _, f := range fields(t) {
		if f.Name != "" {
			out = append(out, f)
		}
	}
	return out
}

// LogValue returns cfg as a slog group keyed by variable name, with secrets
// masked: log it once at start.
func LogValue(cfg any) slog.Value {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var attrs []slog.Attr
	for i, f := range fields(v.Type()) {
		if f.Name == "" {
			continue
		}
		val := fmt.Sprint(v.Field(i).Interface())
		attrs = append(attrs, slog.String(f.Name, maskIf(f.Secret, val)))
	}
	return slog.GroupValue(attrs...)
}

// fields returns one Var per struct field (empty Name for untagged fields).
func fields(t reflect.Type) []Var {
	out := make([]Var, t.NumField())
	for i := range t.NumField() {
		sf := t.Field(i)
		name := sf.Tag.Get("env")
		if name == "" {
			continue
		}
		out[i] = Var{
			Name:     name,
			Default:  sf.Tag.Get("default"),
			Required: sf.Tag.Get("required") == "true",
			Secret:   sf.Tag.Get("secret") == "true",
			Doc:      sf.Tag.Get("doc"),
		}
	}
	return out
}

func maskIf(secret bool, s string) string {
	if secret && s != "" {
		return "****"
	}
	return s
}

var durationType = reflect.TypeFor[time.Duration]()

func set(f reflect.Value, raw string) error {
	if f.Type() == durationType {
		if raw == "" {
			return nil
		}
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New("not a duration (e.g. 250ms, 25s, 168h)")
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(raw)
	case reflect.Bool:
		if raw == "" {
			return nil
		}
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("not a boolean (true/false)")
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		if raw == "" {
			return nil
		}
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		f.SetInt(n)
	case reflect.Float64:
		if raw == "" {
			return nil
		}
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("not a number")
		}
		f.SetFloat(x)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported field type %s", f.Type())
		}
		var items []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported field type %s", f.Type())
	}
	return nil
}
