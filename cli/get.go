package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api"
	"skiff.dev/skiff/api/quantity"
)

func getCmd(e *env) *cobra.Command {
	var selector, output string
	var all bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME] | KIND/NAME",
		Short: "show objects",
		Long: `Show objects of a kind, or one object. Kinds accept singular, plural and
short forms (pod, pods, po; node, nodes, no; grant, grants; controller,
controllers). Output is a table (-o table, default), a wider table (-o wide),
YAML (-o yaml) or JSON (-o json: an object for one, an array for a list).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kindArg, name := args[0], ""
			if k, n, ok := strings.Cut(kindArg, "/"); ok {
				if len(args) > 1 {
					return fmt.Errorf("give KIND/NAME or KIND NAME, not both")
				}
				kindArg, name = k, n
			} else if len(args) == 2 {
				name = args[1]
			}
			k, err := api.LookupKind(kindArg)
			if err != nil {
				return err
			}
			switch output {
			case "table", "wide", "yaml", "json":
			default:
				return fmt.Errorf("-o %s: use table, wide, yaml or json", output)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			if name != "" {
				ref, err := api.ParseRef(k.Name+"/"+name, e.namespace)
				if err != nil {
					return err
				}
				o, err := c.Get(cmd.Context(), ref)
				if err != nil {
					return err
				}
				return printObjects(e.stdout, k, []api.Object{o}, output, false, true)
			}
			ns := e.namespace
			if all || !k.Namespaced {
				ns = ""
			}
			l, err := c.List(cmd.Context(), k.Name, ns, selector)
			if err != nil {
				return err
			}
			if len(l.Items) == 0 && (output == "table" || output == "wide") {
				where := ""
				if k.Namespaced && !all {
					where = " in namespace " + e.namespace
				}
				fmt.Fprintf(e.stderr, "no %s%s\n", k.Plural, where)
				return nil
			}
			return printObjects(e.stdout, k, l.Items, output, all && k.Namespaced, false)
		},
	}
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector, e.g. app=web,tier!=db")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide, yaml or json")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list across all namespaces")
	return cmd
}

func printObjects(w io.Writer, k api.KindInfo, objs []api.Object, output string, showNS, single bool) error {
	switch output {
	case "json":
		if single {
			return writeJSONOut(w, objs[0])
		}
		return writeJSONOut(w, objs)
	case "yaml":
		for i, o := range objs {
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			b, err := objectYAML(o)
			if err != nil {
				return err
			}
			w.Write(b)
		}
		return nil
	}
	wide := output == "wide"
	cols := columnsFor(k.Name)
	header := []string{}
	if showNS {
		header = append(header, "NAMESPACE")
	}
	header = append(header, "NAME")
	for _, c := range cols {
		if !c.wide || wide {
			header = append(header, c.title)
		}
	}
	header = append(header, "REV", "AGE")
	if wide {
		header = append(header, "LABELS")
	}
	t := newTable(w, header...)
	for _, o := range objs {
		row := []string{}
		if showNS {
			row = append(row, o.Namespace)
		}
		row = append(row, o.Name)
		for _, c := range cols {
			if !c.wide || wide {
				row = append(row, orDash(c.value(&o)))
			}
		}
		row = append(row, strconv.FormatInt(o.Meta.Revision, 10), age(o.Meta.Created))
		if wide {
			row = append(row, labelString(o.Labels))
		}
		t.row(row...)
	}
	t.flush()
	return nil
}

type column struct {
	title string
	wide  bool
	value func(o *api.Object) string
}

// columnsFor lists the table columns of a kind, between NAME and REV.
func columnsFor(kind string) []column {
	switch kind {
	case "Pod":
		return []column{
			{title: "PHASE", value: func(o *api.Object) string { return str(o.Status, "phase") }},
			{title: "NODE", value: func(o *api.Object) string { return str(o.Status, "node") }},
			{title: "IP", value: func(o *api.Object) string { return str(o.Status, "ip") }},
			{title: "IMAGES", wide: true, value: func(o *api.Object) string {
				var imgs []string
				if cs, ok := o.Spec["containers"].([]any); ok {
					for _, c := range cs {
						if m, ok := c.(map[string]any); ok {
							imgs = append(imgs, str(m, "image"))
						}
					}
				}
				return strings.Join(imgs, ",")
			}},
		}
	case "Node":
		return []column{
			{title: "STATE", value: nodeState},
			{title: "HEARTBEAT", value: func(o *api.Object) string {
				t, err := time.Parse(time.RFC3339Nano, str(o.Status, "heartbeat"))
				if err != nil {
					return ""
				}
				return age(t)
			}},
			{title: "PODS", value: func(o *api.Object) string { return str(o.Status, "pods") }},
			{title: "FREE-CPU", value: func(o *api.Object) string {
				return freeOf(o, "cpuMilli", func(v float64) string { return quantity.FormatCPU(int64(v)) })
			}},
			{title: "FREE-MEMORY", value: func(o *api.Object) string { return freeOf(o, "memoryBytes", formatMemory) }},
			{title: "NETWORK", value: func(o *api.Object) string { return str(o.Status, "network") }},
			{title: "ADDRESS", value: func(o *api.Object) string { return str(o.Status, "address") }},
			{title: "POD-PREFIX", wide: true, value: func(o *api.Object) string { return str(o.Status, "podPrefix") }},
		}
	case "Grant":
		return []column{
			{title: "NAMESPACES", value: func(o *api.Object) string { return joinList(o.Spec["namespaces"]) }},
			{title: "PRIVILEGES", value: func(o *api.Object) string { return joinList(o.Spec["privileges"]) }},
		}
	case "Controller":
		return []column{
			{title: "STEPS", value: func(o *api.Object) string {
				l, _ := o.Spec["steps"].([]any)
				return strconv.Itoa(len(l))
			}},
			{title: "OWNS", value: func(o *api.Object) string { return joinList(o.Spec["owns"]) }},
		}
	}
	return nil
}

// nodeState is what an operator wants to know first about a node, as
// the node lifecycle sees it: unreachable (no heartbeat for a lease),
// draining or drained (spec.drain), cordoned (spec.unschedulable),
// registering (never heard from), else the state its agent reports.
// Several can hold: "unreachable,draining".
func nodeState(o *api.Object) string {
	var states []string
	if str(o.Status, "reachability") == "unreachable" {
		states = append(states, "unreachable")
	}
	drain, _ := o.Spec["drain"].(bool)
	cordon, _ := o.Spec["unschedulable"].(bool)
	switch {
	case drain && str(o.Status, "drain") == "drained":
		states = append(states, "drained")
	case drain:
		states = append(states, "draining")
	case cordon:
		states = append(states, "cordoned")
	}
	if len(states) > 0 {
		return strings.Join(states, ",")
	}
	if str(o.Status, "heartbeat") == "" {
		return "registering"
	}
	return str(o.Status, "state")
}

// freeOf renders a node's free amount of a resource over its capacity,
// "1500m/2" or "3.1Gi/23.4Gi", from status.allocated (what the pods
// placed there hold) and status.capacity.
func freeOf(o *api.Object, key string, format func(float64) string) string {
	capacity, ok := valueAt(o.Status, "capacity", key).(float64)
	if !ok {
		return ""
	}
	used, _ := valueAt(o.Status, "allocated", key).(float64)
	return format(capacity-used) + "/" + format(capacity)
}

func formatMemory(v float64) string {
	if v >= 1<<30 {
		return strconv.FormatFloat(v/(1<<30), 'f', 1, 64) + "Gi"
	}
	return quantity.FormatBytes(int64(v))
}

func joinList(v any) string {
	l, _ := v.([]any)
	parts := make([]string, 0, len(l))
	for _, e := range l {
		parts = append(parts, fmt.Sprint(e))
	}
	return strings.Join(parts, ",")
}
