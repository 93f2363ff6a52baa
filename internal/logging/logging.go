// Package logging builds the JSON slog logger every chat-poc process writes
// to stderr, at the level its LOG_LEVEL configures.
package logging

import (
	"fmt"
	"log/slog"
	"os"
)

// New returns a JSON logger on stderr at level ("debug", "info", "warn" or
// "error"), with attrs on every record (e.g. "service", "sync").
func New(level string, attrs ...any) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With(attrs...), nil
}
