package cli

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/workflow"
)

func graphCmd(e *env) *cobra.Command {
	var chain, dot bool
	var svgFile string
	cmd := &cobra.Command{
		Use:   "graph KIND/NAME [--critical-chain | --dot | --svg FILE]",
		Short: "show the newest run of an object as a critical chain, a Graphviz graph or an SVG timeline",
		Long: `Show the newest run of an object.

--critical-chain (the default), like systemd-analyze critical-chain: from the
run's goal target back along the ordering edges, always through the unit that
finished last. "@" is when a unit finished, relative to the start of the run;
"+" is how long it ran.

--dot prints a Graphviz graph: steps are boxes, targets ellipses; failed units
are red, optional ones dashed. Plain edges are ordering (after), bold ones
requires, dashed ones wants; an edge points from a unit to what it depends on.
Render it with: skiff graph pod/web --dot | dot -Tsvg > web.svg

--svg FILE writes a timeline like systemd-analyze plot: one row per unit, in
the order they started.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			for _, on := range []bool{chain, dot, svgFile != ""} {
				if on {
					n++
				}
			}
			if n > 1 {
				return fmt.Errorf("give one of --critical-chain, --dot and --svg")
			}
			if cmd.Flags().Changed("svg") && svgFile == "" {
				return fmt.Errorf("--svg needs a file name")
			}
			ref, runs, err := fetchRuns(cmd, e, args[0])
			if err != nil {
				return err
			}
			if len(runs) == 0 {
				return fmt.Errorf("%s: no runs yet", ref)
			}
			run, now := runs[0], time.Now()
			switch {
			case dot:
				return renderDot(e.stdout, run)
			case svgFile != "":
				var w io.Writer
				var f *os.File
				if svgFile == "-" {
					w = e.stdout
				} else {
					if f, err = os.Create(svgFile); err != nil {
						return err
					}
					w = f
				}
				bw := bufio.NewWriter(w)
				err := renderSVG(bw, run, now)
				if ferr := bw.Flush(); err == nil {
					err = ferr
				}
				if f != nil {
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err != nil {
					return err
				}
				if f != nil {
					fmt.Fprintf(e.stdout, "wrote %s (%d units, %s)\n", svgFile, len(run.Steps), fmtDur(runEnd(run, now).Sub(runStart(run))))
				}
				return nil
			default:
				renderCriticalChain(e.stdout, run, now)
				return nil
			}
		},
	}
	cmd.Flags().BoolVar(&chain, "critical-chain", false, "print the chain of units that decided when the goal was reached (default)")
	cmd.Flags().BoolVar(&dot, "dot", false, "print the run as a Graphviz digraph")
	cmd.Flags().StringVar(&svgFile, "svg", "", "write a timeline of the run as SVG to FILE (- for standard output)")
	return cmd
}

// ---- critical chain ----

// criticalChain returns the indexes of the units on a run's critical chain,
// goal first: from the goal target back along After edges, always to the
// predecessor that finished last. A predecessor that never finished counts
// as finishing after all others: it is what holds the chain up.
func criticalChain(run workflow.RunRecord) []int {
	steps := run.Steps
	if len(steps) == 0 {
		return nil
	}
	idx := make(map[string]int, len(steps))
	for i, s := range steps {
		if _, dup := idx[s.Name]; !dup {
			idx[s.Name] = i
		}
	}
	cur, ok := idx[run.Target]
	if !ok { // no goal unit recorded: start at the last unit in order
		order := unitOrder(steps)
		cur = order[len(order)-1]
	}
	seen := map[int]bool{}
	var chain []int
	for {
		chain = append(chain, cur)
		seen[cur] = true
		next := -1
		for _, a := range steps[cur].After {
			j, ok := idx[a]
			if !ok || seen[j] {
				continue
			}
			if next < 0 || finishedLater(steps[j], steps[next]) {
				next = j
			}
		}
		if next < 0 {
			return chain
		}
		cur = next
	}
}

// finishedLater reports whether a finished after b (ties by name).
func finishedLater(a, b workflow.StepRecord) bool {
	if (a.Finished == nil) != (b.Finished == nil) {
		return a.Finished == nil
	}
	if a.Finished == nil { // both unfinished: running before waiting, then the later start
		ar, br := a.State == workflow.Running, b.State == workflow.Running
		if ar != br {
			return ar
		}
		as, bs := timeOr(a.Started), timeOr(b.Started)
		if !as.Equal(bs) {
			return as.After(bs)
		}
		return a.Name < b.Name
	}
	if !a.Finished.Equal(*b.Finished) {
		return a.Finished.After(*b.Finished)
	}
	return a.Name < b.Name
}

func timeOr(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// renderCriticalChain prints the critical chain like systemd-analyze
// critical-chain: goal first, each unit's finish time after "@" and its own
// duration after "+", indentation growing toward the root.
func renderCriticalChain(w io.Writer, run workflow.RunRecord, now time.Time) {
	fmt.Fprintln(w, runHeader(run, now))
	fmt.Fprintln(w, `The time when a unit finished is printed after the "@" character.`)
	fmt.Fprintln(w, `The time a unit ran is printed after the "+" character.`)
	fmt.Fprintln(w)
	start := runStart(run)
	for depth, i := range criticalChain(run) {
		s := run.Steps[i]
		prefix := ""
		if depth > 0 {
			prefix = strings.Repeat("  ", depth-1) + "└─"
		}
		fmt.Fprintln(w, prefix+chainUnit(s, start, now))
	}
}

func chainUnit(s workflow.StepRecord, start, now time.Time) string {
	var b strings.Builder
	b.WriteString(s.Name)
	if s.Finished == nil {
		b.WriteString(" [" + s.State)
		if s.Started != nil {
			fmt.Fprintf(&b, " since @%s, for %s", chainSecs(s.Started.Sub(start)), chainSecs(now.Sub(*s.Started)))
		}
		b.WriteString(", not finished]")
		return b.String()
	}
	fmt.Fprintf(&b, " @%s", chainSecs(s.Finished.Sub(start)))
	if s.Started != nil {
		if d := s.Finished.Sub(*s.Started); d > 0 {
			fmt.Fprintf(&b, " +%s", chainSecs(d))
		}
	}
	if s.State != workflow.Done {
		b.WriteString(" [" + s.State + "]")
	}
	return b.String()
}

// chainSecs renders a duration the way systemd-analyze does: 1.234s,
// 2min 3.456s.
func chainSecs(d time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	d = d.Round(time.Millisecond)
	if d >= time.Minute {
		m := d / time.Minute
		return fmt.Sprintf("%s%dmin %.3fs", neg, m, (d - m*time.Minute).Seconds())
	}
	return fmt.Sprintf("%s%.3fs", neg, d.Seconds())
}

// runStart is when a run started, or its earliest unit if unrecorded.
func runStart(run workflow.RunRecord) time.Time {
	if !run.Started.IsZero() {
		return run.Started
	}
	var t time.Time
	for _, s := range run.Steps {
		for _, p := range []*time.Time{s.Started, s.Finished} {
			if p != nil && (t.IsZero() || p.Before(t)) {
				t = *p
			}
		}
	}
	return t
}

// runEnd is when a run finished, or now while it runs; never before the
// last thing its units recorded.
func runEnd(run workflow.RunRecord, now time.Time) time.Time {
	end := now
	if run.Finished != nil {
		end = *run.Finished
	}
	for _, s := range run.Steps {
		for _, p := range []*time.Time{s.Started, s.Finished} {
			if p != nil && p.After(end) {
				end = *p
			}
		}
	}
	return end
}

// ---- Graphviz ----

// renderDot writes a run as a Graphviz digraph. Edges point from a unit to
// the unit it depends on: plain for after, bold for requires, dashed for
// wants. Output is deterministic.
func renderDot(w io.Writer, run workflow.RunRecord) error {
	bw := bufio.NewWriter(w)
	known := map[string]bool{}
	for _, s := range run.Steps {
		known[s.Name] = true
	}
	fmt.Fprintf(bw, "digraph %s {\n", dotQuote(fmt.Sprintf("%s generation %d", runObject(run), run.Generation)))
	fmt.Fprintln(bw, "  rankdir=RL;")
	fmt.Fprintln(bw, `  node [fontname="Helvetica", fontsize=10];`)
	fmt.Fprintln(bw, `  edge [fontname="Helvetica", fontsize=8];`)
	order := unitOrder(run.Steps)
	for _, i := range order {
		s := run.Steps[i]
		var attrs []string
		var styles []string
		if s.Target {
			attrs = append(attrs, "shape=ellipse", "label="+dotQuote(s.Name))
		} else {
			attrs = append(attrs, "shape=box", "label="+dotQuote(s.Name+"\n"+orDash(s.Controller)))
			styles = append(styles, "rounded")
		}
		if s.Optional {
			styles = append(styles, "dashed")
		}
		if len(styles) > 0 {
			attrs = append(attrs, "style="+dotQuote(strings.Join(styles, ",")))
		}
		switch s.State {
		case workflow.Failed, workflow.TimedOut:
			attrs = append(attrs, "color=red", "fontcolor=red")
		case workflow.Running:
			attrs = append(attrs, "color=blue", "fontcolor=blue")
		case workflow.Waiting, workflow.Skipped, workflow.Cancelled:
			attrs = append(attrs, "color=gray50", "fontcolor=gray50")
		}
		tip := s.State
		if s.Reason != "" {
			tip += ": " + oneLineText(s.Reason)
		}
		attrs = append(attrs, "tooltip="+dotQuote(tip))
		fmt.Fprintf(bw, "  %s [%s];\n", dotQuote(s.Name), strings.Join(attrs, ", "))
	}
	edges := func(from string, to []string, attrs string) {
		for _, t := range sortedUnique(to) {
			if !known[t] || t == from {
				continue
			}
			fmt.Fprintf(bw, "  %s -> %s%s;\n", dotQuote(from), dotQuote(t), attrs)
		}
	}
	for _, i := range order {
		s := run.Steps[i]
		edges(s.Name, s.After, "")
		edges(s.Name, s.Requires, ` [style=bold, label="requires"]`)
		edges(s.Name, s.Wants, ` [style=dashed, label="wants"]`)
	}
	fmt.Fprintln(bw, "}")
	return bw.Flush()
}

func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")
	return `"` + r.Replace(s) + `"`
}

func sortedUnique(l []string) []string {
	c := append([]string(nil), l...)
	sort.Strings(c)
	out := c[:0]
	for i, s := range c {
		if i == 0 || s != c[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// ---- SVG timeline ----

// SVG timeline geometry, in pixels. Row text sits inside its own row, so
// it never reaches the bars of the next row.
const (
	svgMarginX  = 20
	svgHeaderH  = 52 // title and subtitle
	svgAxisH    = 26 // tick labels above the rows
	svgRowH     = 20
	svgBarH     = 14
	svgTargetH  = 6
	svgFontSize = 11
	svgCharW    = 6.7 // width of one monospace character at svgFontSize
	svgLegendH  = 34
	svgMinPlotW = 800
	svgMaxPlotW = 2400
	svgPxPerSec = 100 // preferred scale, within the widths above
)

var stateColors = []struct{ state, fill string }{
	{workflow.Done, "#43a047"},
	{workflow.Running, "#1e88e5"},
	{workflow.Failed, "#e53935"},
	{workflow.TimedOut, "#fb8c00"},
	{workflow.Waiting, "#bdbdbd"},
	{workflow.Skipped, "#d7ccc8"},
	{workflow.Cancelled, "#9e9e9e"},
}

func stateFill(state string) string {
	for _, c := range stateColors {
		if c.state == state {
			return c.fill
		}
	}
	return "#757575"
}

// renderSVG writes a timeline of a run like systemd-analyze plot: one row
// per unit sorted by start time, a bar from its start to its finish (to the
// end of the run, or now, while unfinished), colored by state, with name,
// controller and duration beside it, under a time axis.
func renderSVG(w io.Writer, run workflow.RunRecord, now time.Time) error {
	bw := bufio.NewWriter(w)
	start, end := runStart(run), runEnd(run, now)
	total := end.Sub(start)
	if total < 100*time.Millisecond {
		total = 100 * time.Millisecond
	}
	plotW := math.Min(math.Max(total.Seconds()*svgPxPerSec, svgMinPlotW), svgMaxPlotW)
	pxPerSec := plotW / total.Seconds()
	x0 := float64(svgMarginX)
	xOf := func(t time.Time) float64 { return x0 + t.Sub(start).Seconds()*pxPerSec }

	type row struct {
		s          workflow.StepRecord
		from, to   time.Time
		pos        int
		text       string
		bx, bw     float64
		tx         float64
		anchorEnd  bool
		inside     bool // text drawn on the bar
		unfinished bool
	}
	order := unitOrder(run.Steps)
	rows := make([]row, 0, len(order))
	for pos, i := range order {
		s := run.Steps[i]
		r := row{s: s, pos: pos}
		switch {
		case s.Started != nil:
			r.from = *s.Started
		case s.Finished != nil:
			r.from = *s.Finished
		default:
			r.from = end
		}
		if s.Finished != nil {
			r.to = *s.Finished
		} else {
			r.to, r.unfinished = end, s.Started != nil
		}
		if r.to.Before(r.from) {
			r.to = r.from
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(a, b int) bool {
		if !rows[a].from.Equal(rows[b].from) {
			return rows[a].from.Before(rows[b].from)
		}
		return rows[a].pos < rows[b].pos
	})

	width := x0 + plotW + svgMarginX
	for i := range rows {
		r := &rows[i]
		r.bx = xOf(r.from)
		r.bw = math.Max(xOf(r.to)-r.bx, 2)
		r.text = svgRowText(r.s, now)
		tw := float64(textWidth(r.text)) * svgCharW
		switch right := r.bx + r.bw + 5; {
		case right+tw <= x0+plotW:
			r.tx = right
		case r.bw >= tw+10:
			r.tx, r.inside = r.bx+5, true
		case r.bx-5-tw >= x0:
			r.tx, r.anchorEnd = r.bx-5, true
		default:
			r.tx = right
			width = math.Max(width, right+tw+svgMarginX)
		}
	}
	title := runHeader(run, now)
	width = math.Max(width, x0+float64(textWidth(title))*svgCharW*14/11+svgMarginX)
	rowsY := float64(svgHeaderH + svgAxisH)
	height := rowsY + float64(len(rows)*svgRowH) + svgLegendH

	fmt.Fprintln(bw, `<?xml version="1.0" encoding="UTF-8"?>`)
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" font-family="monospace" font-size="%d">`+"\n",
		num(width), num(height), num(width), num(height), svgFontSize)
	fmt.Fprintf(bw, "<title>%s</title>\n", xmlEsc(title))
	fmt.Fprintf(bw, `<rect class="background" x="0" y="0" width="%s" height="%s" fill="#ffffff"/>`+"\n", num(width), num(height))
	fmt.Fprintf(bw, `<text class="title" x="%s" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", num(x0), xmlEsc(title))
	sub := fmt.Sprintf("%d units · started %s", len(rows), start.Local().Format("2006-01-02 15:04:05.000"))
	if run.State == workflow.RunRunning {
		sub += " · drawn " + now.Local().Format("15:04:05.000")
	}
	fmt.Fprintf(bw, `<text class="subtitle" x="%s" y="40" fill="#555555">%s</text>`+"\n", num(x0), xmlEsc(sub))

	// Row stripes, then the time grid over them, then the bars.
	for i := range rows {
		if i%2 == 1 {
			fmt.Fprintf(bw, `<rect class="stripe" x="0" y="%s" width="%s" height="%d" fill="#f5f5f5"/>`+"\n",
				num(rowsY+float64(i*svgRowH)), num(width), svgRowH)
		}
	}
	step := tickStep(total, pxPerSec)
	gridBottom := rowsY + float64(len(rows)*svgRowH)
	fmt.Fprintln(bw, `<g class="axis" stroke="#dddddd" stroke-width="1">`)
	for t := time.Duration(0); t <= total; t += step {
		x := x0 + t.Seconds()*pxPerSec
		fmt.Fprintf(bw, `<line x1="%s" y1="%s" x2="%s" y2="%s"/>`+"\n", num(x), num(rowsY-6), num(x), num(gridBottom))
	}
	fmt.Fprintln(bw, `</g>`)
	fmt.Fprintln(bw, `<g class="ticks" fill="#555555" text-anchor="middle">`)
	for t := time.Duration(0); t <= total; t += step {
		x := x0 + t.Seconds()*pxPerSec
		fmt.Fprintf(bw, `<text x="%s" y="%s">%s</text>`+"\n", num(x), num(rowsY-10), xmlEsc(tickLabel(t)))
	}
	fmt.Fprintln(bw, `</g>`)
	if run.State == workflow.RunRunning && run.Finished == nil {
		x := xOf(now)
		fmt.Fprintf(bw, `<line class="now" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#1e88e5" stroke-dasharray="4,3"/>`+"\n",
			num(x), num(rowsY-6), num(x), num(gridBottom))
	}

	for i, r := range rows {
		y := rowsY + float64(i*svgRowH)
		h := float64(svgBarH)
		if r.s.Target {
			h = svgTargetH
		}
		by := y + (svgRowH-h)/2
		extra := ""
		if r.s.Optional {
			extra += ` stroke="#333333" stroke-dasharray="3,2"`
		}
		if r.s.Started == nil && r.s.Finished == nil {
			extra += ` fill-opacity="0.5"`
		}
		tip := fmt.Sprintf("%s (%s): %s", r.s.Name, unitController(r.s), r.s.State)
		if d := unitDurText(r.s, now); d != "" {
			tip += ", " + d
		}
		if r.s.Reason != "" {
			tip += "; " + oneLineText(r.s.Reason)
		}
		fmt.Fprintf(bw, `<rect class="bar %s" data-unit="%s" x="%s" y="%s" width="%s" height="%s" rx="2" fill="%s"%s><title>%s</title></rect>`+"\n",
			strings.ReplaceAll(r.s.State, " ", "-"), xmlEsc(r.s.Name), num(r.bx), num(by), num(r.bw), num(h), stateFill(r.s.State), extra, xmlEsc(tip))
		anchor := ""
		if r.anchorEnd {
			anchor = ` text-anchor="end"`
		}
		if r.inside {
			anchor = ` fill="#ffffff"`
		}
		fmt.Fprintf(bw, `<text class="label" x="%s" y="%s"%s>%s</text>`+"\n", num(r.tx), num(y+14), anchor, xmlEsc(r.text))
	}

	// Legend.
	ly := gridBottom + 14
	lx := x0
	for _, c := range stateColors {
		fmt.Fprintf(bw, `<rect class="legend" x="%s" y="%s" width="12" height="12" fill="%s"/>`, num(lx), num(ly), c.fill)
		fmt.Fprintf(bw, `<text x="%s" y="%s">%s</text>`+"\n", num(lx+16), num(ly+10), xmlEsc(c.state))
		lx += 16 + float64(textWidth(c.state))*svgCharW + 18
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// svgRowText is the text beside a unit's bar: name, controller, duration.
func svgRowText(s workflow.StepRecord, now time.Time) string {
	t := s.Name + " (" + unitController(s) + ")"
	if d := unitDurText(s, now); d != "" {
		t += " " + d
	}
	if s.State != workflow.Done && s.State != workflow.Running {
		t += " [" + s.State + "]"
	}
	if s.Optional {
		t += " optional"
	}
	return t
}

// tickStep picks a round tick interval at least 70px wide.
func tickStep(total time.Duration, pxPerSec float64) time.Duration {
	steps := []time.Duration{
		time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
		10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	}
	for _, s := range steps {
		if s.Seconds()*pxPerSec >= 70 {
			return s
		}
	}
	return total
}

func tickLabel(d time.Duration) string {
	if d < time.Minute {
		return strconv.FormatFloat(d.Round(time.Millisecond).Seconds(), 'f', -1, 64) + "s"
	}
	s := d.Round(time.Second).String() // 1m30s, 2m0s, 1h0m0s
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// num formats a coordinate with at most one decimal.
func num(f float64) string { return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) }

func xmlEsc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
