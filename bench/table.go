package bench

import (
	"fmt"
	"io"
	"runtime"
	"sort"
	"text/tabwriter"
	"time"
)

// Row is one measured figure.
type Row struct {
	Metric string
	Value  string
	Target string // "" if none
	Met    *bool  // nil if there is no target
}

func met(ok bool) *bool { return &ok }

// Print writes rows as an aligned table with a verdict column.
func Print(w io.Writer, title string, rows []Row) {
	fmt.Fprintf(w, "%s  (%d CPUs, %s, %s/%s)\n", title, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tRESULT\tTARGET\t")
	for _, r := range rows {
		verdict := ""
		if r.Met != nil {
			verdict = "ok"
			if !*r.Met {
				verdict = "MISSED"
			}
		}
		t := r.Target
		if t == "" {
			t = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Metric, r.Value, t, verdict)
	}
	tw.Flush()
}

// percentile returns the p-th percentile (0..100) of durations.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
