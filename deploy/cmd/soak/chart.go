package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Layout of the chart, in SVG user units.
const (
	chartW, chartH = 960, 540
	padL, padR     = 64, 210 // the legend is on the right
	padT, padB     = 48, 56
)

// palette colours the series, in order (distinct in print and for the
// common colour-vision deficiencies).
var palette = []string{
	"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e",
	"#e6ab02", "#a6761d", "#666666", "#1f78b4", "#e31a1c",
}

// writeChart draws rows' series (MB against minutes) as an SVG line chart
// with the half-way mark and the ±10 % band's reference points.
func writeChart(path string, rows []row, names []string, cfg config) error {
	if len(rows) == 0 {
		return fmt.Errorf("write chart: no samples")
	}
	maxX := rows[len(rows)-1].at.Minutes()
	maxY := 0.0
	for _, r := range rows {
		for _, v := range r.mb {
			maxY = max(maxY, v)
		}
	}
	maxY = niceCeil(maxY * 1.1)
	x := func(min float64) float64 { return padL + min/math.Max(maxX, 1e-9)*(chartW-padL-padR) }
	y := func(mb float64) float64 { return chartH - padB - mb/maxY*(chartH-padT-padB) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15">Soak: %s at %.0f writes/s — resident memory of each service and Redis used_memory (MB), sampled every %s</text>`+"\n",
		padL, cfg.duration, cfg.rate, cfg.every)
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, chartW-padR, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", padL-6, y(v)+4, v)
	}
	ticks := 6
	for i := 0; i <= ticks; i++ {
		m := maxX * float64(i) / float64(ticks)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(m), chartH-padB+18,
			strconv.FormatFloat(math.Round(m*10)/10, 'f', -1, 64))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">minutes</text>`+"\n", x(maxX/2), chartH-12)
	fmt.Fprintf(&b, `<text x="16" y="%.1f" transform="rotate(-90 16 %.1f)" text-anchor="middle">MB</text>`+"\n", y(maxY/2), y(maxY/2))
	mid := rows[len(rows)/2].at.Minutes()
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#999" stroke-dasharray="4 4"/>`+"\n", x(mid), x(mid), padT, chartH-padB)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#666">half-way: the second half is judged against it (±10 %%)</text>`+"\n", x(mid)+4, padT+12)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", padL, padL, padT, chartH-padB)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", padL, chartW-padR, chartH-padB, chartH-padB)

	for i, name := range names {
		colour := palette[i%len(palette)]
		var pts []string
		for _, r := range rows {
			if v, ok := r.mb[name]; ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(r.at.Minutes()), y(v)))
			}
		}
		if len(pts) == 0 {
			continue
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n", colour, strings.Join(pts, " "))
		ly := padT + 18*i
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", chartW-padR+12, chartW-padR+32, ly, ly, colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", chartW-padR+38, ly+4, html.EscapeString(name))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#666">%s, make soak</text>`+"\n",
		padL, chartH-12, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("</svg>\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	return nil
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
