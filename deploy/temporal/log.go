package main

import (
	"context"
	"log/slog"
	"os"

	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// slogLogger adapts a *slog.Logger to Temporal's log.Logger interface so the
// embedded server logs through the same handler as this program. level is an
// extra floor for Temporal's own records (raised to error during shutdown,
// when the server routinely warns about connections going away).
type slogLogger struct {
	log   *slog.Logger
	level *slog.LevelVar
}

var (
	_ log.Logger      = slogLogger{}
	_ log.WithLogger  = slogLogger{}
	_ log.SLogWrapper = slogLogger{}
)

func (s slogLogger) Debug(msg string, tags ...tag.Tag)  { s.emit(slog.LevelDebug, msg, tags) }
func (s slogLogger) Info(msg string, tags ...tag.Tag)   { s.emit(slog.LevelInfo, msg, tags) }
func (s slogLogger) Warn(msg string, tags ...tag.Tag)   { s.emit(slog.LevelWarn, msg, tags) }
func (s slogLogger) Error(msg string, tags ...tag.Tag)  { s.emit(slog.LevelError, msg, tags) }
func (s slogLogger) DPanic(msg string, tags ...tag.Tag) { s.emit(slog.LevelError, msg, tags) }
func (s slogLogger) Panic(msg string, tags ...tag.Tag)  { s.emit(slog.LevelError, msg, tags) }

// Fatal keeps Temporal's contract (the caller expects the process to end).
func (s slogLogger) Fatal(msg string, tags ...tag.Tag) {
	s.emit(slog.LevelError, msg, tags)
	os.Exit(1)
}

func (s slogLogger) With(tags ...tag.Tag) log.Logger {
	return slogLogger{log: slog.New(s.log.Handler().WithAttrs(tagsToAttrs(tags))), level: s.level}
}

// SLog lets Temporal components that want an slog.Logger use ours directly.
func (s slogLogger) SLog() *slog.Logger { return s.log }

func (s slogLogger) emit(level slog.Level, msg string, tags []tag.Tag) {
	ctx := context.Background()
	if level >= s.level.Level() && s.log.Enabled(ctx, level) {
		s.log.LogAttrs(ctx, level, msg, tagsToAttrs(tags)...)
	}
}

func tagsToAttrs(tags []tag.Tag) []slog.Attr {
	attrs := make([]slog.Attr, len(tags))
	for i, t := range tags {
		attrs[i] = slog.Any(t.Key(), t.Value())
	}
	return attrs
}
