package main

import (
	"encoding/xml"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsRejectsWhatCannotBeJudged(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-duration", "4m", "-every", "1m"}, true},
		{[]string{"-duration", "3m", "-every", "1m"}, false},
		{[]string{"-rate", "0"}, false},
		{[]string{"-every", "-1s"}, false},
		{[]string{"-chats", "0"}, false},
	} {
		if _, err := parseFlags(tc.args); (err == nil) != tc.ok {
			t.Errorf("parseFlags(%q) = %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}

// TestGrowthJudgesTheSecondHalfAgainstTheMiddle feeds samples of a flat
// series, one growing by 30 % after the middle and one that shrank, and a
// series missing from some rows (a restarted service).
func TestGrowthJudgesTheSecondHalfAgainstTheMiddle(t *testing.T) {
	t.Parallel()
	s := &sampler{}
	for i := range 10 {
		r := row{at: time.Duration(i) * time.Minute, mb: map[string]float64{
			"internal-a1": 100 + float64(i%2), // flat within 1 %
			"writer-a1":   float64(50 + 5*max(0, i-5)),
			redisSeries:   200 - float64(10*i),
		}}
		if i != 7 {
			r.mb["external"] = 40
		}
		s.rows = append(s.rows, r)
	}
	g := s.growth()
	for name, want := range map[string]float64{"internal-a1": 1, "writer-a1": 40, redisSeries: 100 * 40.0 / 150, "external": 0} {
		if got := g[name]; got < want-0.01 || got > want+0.01 {
			t.Errorf("growth of %s = %.2f %%, want %.2f %%", name, got, want)
		}
	}
	if _, ok := g[syncActiveSeries]; ok {
		t.Errorf("growth of a series never sampled: %v", g[syncActiveSeries])
	}
}

// The sync workers are judged as a role: when the activity moves from one
// replica to another (its memory with it), the largest and the smallest
// replica stay flat though each replica changed by a third; a role that
// grows is still caught.
func TestGrowthJudgesTheSyncWorkersAsARole(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		active     func(i int) float64 // the running worker's memory at sample i
		wantActive float64
	}{
		{"activity moves, flat", func(int) float64 { return 60 }, 0},
		{"activity moves, growing", func(i int) float64 { return 60 + 3*float64(max(0, i-5)) }, 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &sampler{}
			for i := range 10 {
				a1, b1 := tt.active(i), 40.0 // a1 runs the activity, then b1 from sample 7
				if i >= 7 {
					a1, b1 = 40, tt.active(i)
				}
				s.rows = append(s.rows, row{at: time.Duration(i) * time.Minute, mb: map[string]float64{
					"sync-a1": a1, "sync-a2": 40, "sync-b1": b1,
				}})
			}
			g := s.growth()
			if got := g[syncActiveSeries]; got < tt.wantActive-0.01 || got > tt.wantActive+0.01 {
				t.Errorf("growth of %s = %.2f %%, want %.2f %%", syncActiveSeries, got, tt.wantActive)
			}
			if got := g[syncIdleSeries]; got != 0 {
				t.Errorf("growth of %s = %.2f %%, want 0", syncIdleSeries, got)
			}
			for _, replica := range []string{"sync-a1", "sync-b1"} {
				if _, ok := g[replica]; ok {
					t.Errorf("replica %s judged on its own", replica)
				}
			}
		})
	}
}

// judge -judge reads back what the soak wrote: soak.csv's samples, a
// service not running at a sample included.
func TestReadCSVReadsWhatWriteCSVWrote(t *testing.T) {
	t.Parallel()
	s := &sampler{rows: []row{
		{at: 0, mb: map[string]float64{"internal-a1": 30.25, "sync-a1": 40, redisSeries: 2}},
		{at: 90 * time.Second, mb: map[string]float64{"internal-a1": 31.5, redisSeries: 3}},
	}}
	path := filepath.Join(t.TempDir(), "soak.csv")
	if err := s.writeCSV(path); err != nil {
		t.Fatal(err)
	}
	got, err := readCSV(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(s.rows) {
		t.Fatalf("read %d rows, want %d", len(got), len(s.rows))
	}
	for i, r := range got {
		if r.at != s.rows[i].at || !maps.Equal(r.mb, s.rows[i].mb) {
			t.Errorf("row %d = %+v, want %+v", i, r, s.rows[i])
		}
	}
	if _, err := readCSV(filepath.Join(t.TempDir(), "missing.csv")); err == nil {
		t.Error("a missing file read without error")
	}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	t.Parallel()
	rows := []row{
		{at: 0, mb: map[string]float64{"internal-a1": 30, redisSeries: 2}},
		{at: time.Minute, mb: map[string]float64{"internal-a1": 31, redisSeries: 3}},
		{at: 2 * time.Minute, mb: map[string]float64{"internal-a1": 31.5, redisSeries: 3}},
	}
	path := filepath.Join(t.TempDir(), "soak.svg")
	if err := writeChart(path, rows, []string{"internal-a1", redisSeries, "writer-a1"}, config{duration: 2 * time.Minute, rate: 200, every: time.Minute}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(string(data)))
	polylines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("chart is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 2 {
		t.Errorf("%d lines drawn, want 2 (a series without samples draws none)", polylines)
	}
}

func TestInfoField(t *testing.T) {
	t.Parallel()
	info := "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n"
	if v, err := infoField(info, "used_memory"); err != nil || v != 1<<20 {
		t.Errorf("infoField = %d, %v", v, err)
	}
	if _, err := infoField(info, "maxmemory"); err == nil {
		t.Error("infoField of a missing field: no error")
	}
}
