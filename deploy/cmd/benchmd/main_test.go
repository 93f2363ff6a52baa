package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const benchOutput = `goos: linux
BenchmarkSyncThroughput-2   	   20000	    260458 ns/op	     25699 changes	      5118 changes/s
    bench_test.go:172: per page: poll p50 94.1 ms
BenchmarkSyncLatency-2   	    6000	   5084438 ns/op	       27.98 produce-p50-ms
PASS
ok  	github.com/chatpoc/chat-poc/workers/sync	47.979s
`

func TestRunWritesTheSectionAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	before := "# Benchmarks\n\nintro\n\n<!-- benchmd:sync begin -->\nold table\n<!-- benchmd:sync end -->\n\nafter\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(strings.NewReader(benchOutput), &out, []string{"-file", path, "-section", "sync", "-command", "make bench"}); err != nil {
		t.Fatal(err)
	}
	if out.String() != benchOutput {
		t.Errorf("stdout is not a copy of stdin:\n%s", out.String())
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	for _, want := range []string{
		"intro", "after", "| `BenchmarkSyncThroughput` | changes/s | 5118 | ≥ 5,000 |",
		"| `BenchmarkSyncThroughput` | changes | 25699 | – |", "| `BenchmarkSyncLatency` | produce-p50-ms | 27.98 | ≤ 20 ms |", "`make bench` |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("file lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "old table") || strings.Contains(got, "ns/op") {
		t.Errorf("old section or ns/op left:\n%s", got)
	}
}

func TestRunAppendsANewSectionAndRefusesFailedRuns(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(strings.NewReader(benchOutput), &bytes.Buffer{}, []string{"-file", path, "-section", "new"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "<!-- benchmd:new begin -->") || !strings.Contains(string(b), "<!-- benchmd:new end -->") {
		t.Errorf("section not appended:\n%s", b)
	}
	failed := benchOutput + "--- FAIL: BenchmarkX\nFAIL\n"
	if err := run(strings.NewReader(failed), &bytes.Buffer{}, []string{"-file", path, "-section", "new"}); err == nil {
		t.Error("a failed run updated the file")
	}
	if err := run(strings.NewReader("PASS\n"), &bytes.Buffer{}, []string{"-file", path, "-section", "new"}); err == nil {
		t.Error("a run without figures updated the file")
	}
}
