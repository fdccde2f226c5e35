package labels

import (
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // error text, "" for valid
	}{
		{"app", ""},
		{"App.Name_x-1", ""},
		{"example.com/app", ""},
		{"app.kubernetes.io/name", ""},
		{"a", ""},
		{"1", ""},
		{strings.Repeat("a", 63), ""},
		{"", `invalid label key "": must not be empty`},
		{strings.Repeat("a", 64), `invalid label key "` + strings.Repeat("a", 64) + `": is 64 characters long, max 63`},
		{"-app", `invalid label key "-app": must start and end with a letter or digit`},
		{"app_", `invalid label key "app_": must start and end with a letter or digit`},
		{"my app", `invalid label key "my app": may contain only letters, digits, '-', '_' and '.', found ' '`},
		{"a/b/c", `invalid label key "a/b/c": may contain at most one "/"`},
		{"/app", `invalid label key "/app": prefix before "/" must not be empty`},
		{"example.com/", `invalid label key "example.com/": name after "/" must not be empty`},
		{"Example.com/app", `invalid label key "Example.com/app": prefix before "/" must be a DNS subdomain like "example.com" (lowercase letters, digits, '-' and '.', at most 253 characters)`},
		{"-x.com/app", `invalid label key "-x.com/app": prefix before "/" must be a DNS subdomain like "example.com" (lowercase letters, digits, '-' and '.', at most 253 characters)`},
		{"a..b/app", `invalid label key "a..b/app": prefix before "/" must be a DNS subdomain like "example.com" (lowercase letters, digits, '-' and '.', at most 253 characters)`},
		{"example.com/-app", `invalid label key "example.com/-app": must start and end with a letter or digit`},
	} {
		got := errText(ValidateKey(tc.key))
		if got != tc.want {
			t.Errorf("ValidateKey(%q):\n got %s\nwant %s", tc.key, got, tc.want)
		}
	}
}

func TestValidateValue(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  string
	}{
		{"", ""},
		{"web", ""},
		{"v1.2.3-rc_1", ""},
		{strings.Repeat("x", 63), ""},
		{strings.Repeat("x", 64), `invalid label value "` + strings.Repeat("x", 64) + `": is 64 characters long, max 63`},
		{"a/b", `invalid label value "a/b": may contain only letters, digits, '-', '_' and '.', found '/'`},
		{".hidden", `invalid label value ".hidden": must start and end with a letter or digit`},
		{"héllo", `invalid label value "héllo": may contain only letters, digits, '-', '_' and '.', found 'é'`},
	} {
		got := errText(ValidateValue(tc.value))
		if got != tc.want {
			t.Errorf("ValidateValue(%q):\n got %s\nwant %s", tc.value, got, tc.want)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestParseCanonical(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"", ""},
		{"   ", ""},
		{"app=web", "app=web"},
		{"app==web", "app=web"},
		{" app = web ", "app=web"},
		{"tier!=db", "tier!=db"},
		{"env in (prod, staging)", "env in (prod,staging)"},
		{"env in (staging,prod,prod)", "env in (prod,staging)"},
		{"env in (prod)", "env=prod"},
		{"env notin (dev)", "env!=dev"},
		{"env notin (dev,test)", "env notin (dev,test)"},
		{"gpu", "gpu"},
		{"!legacy", "!legacy"},
		{"! legacy", "!legacy"},
		{"env in ()", "env in ()"},
		{"env in (a,)", "env in (,a)"},
		{"in=x", "in=x"}, // "in" is only a keyword after a key
		{"in", "in"},     // ...so a key may be called "in"
		{"env in (in,notin)", "env in (in,notin)"},
		{"app=web,tier!=db,env in (prod, staging),env notin (dev),gpu,!legacy",
			"app=web,env in (prod,staging),env!=dev,gpu,!legacy,tier!=db"},
		{"z=1,example.com/a=2,a=3", "a=3,example.com/a=2,z=1"},
	} {
		sel, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := sel.String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
		again, err := Parse(sel.String())
		if err != nil || again.String() != sel.String() {
			t.Errorf("Parse(%q) = %q, %v; not canonical", sel.String(), again.String(), err)
		}
		if sel.Empty() != (tc.want == "") {
			t.Errorf("Parse(%q).Empty() = %v", tc.in, sel.Empty())
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"app=", `selector "app=": value missing after "="`},
		{"app==", `selector "app==": value missing after "=="`},
		{"app!=,x", `selector "app!=,x": value missing after "!="`},
		{"app=(", `selector "app=(": expected a value after "=", found "(" at column 5`},
		{"app=web,", `selector "app=web,": expected a label key, found end of input`},
		{"app=web,,x", `selector "app=web,,x": expected a label key, found "," at column 9`},
		{"=web", `selector "=web": expected a label key, found "=" at column 1`},
		{"!", `selector "!": expected a label key, found end of input`},
		{"!a=b", `selector "!a=b": expected "," or end after "!a", found "=" at column 3`},
		{"app web", `selector "app web": expected "=", "!=", "in", "notin", "," or end after key "app", found "web" at column 5`},
		{"app=web tier=db", `selector "app=web tier=db": expected "," or end after "app=web", found "tier" at column 9`},
		{"env in prod", `selector "env in prod": expected "(" after "in", found "prod" at column 8`},
		{"env in (prod", `selector "env in (prod": missing ")" after values of "in"`},
		{"env notin (a b)", `selector "env notin (a b)": expected "," or ")" in values of "notin", found "b" at column 14`},
		{"env in (a,-b)", `selector "env in (a,-b)": invalid label value "-b": must start and end with a letter or digit (column 11)`},
		{"my$app=web", `selector "my$app=web": invalid label key "my$app": may contain only letters, digits, '-', '_' and '.', found '$' (column 1)`},
		{"app=a/b", `selector "app=a/b": invalid label value "a/b": may contain only letters, digits, '-', '_' and '.', found '/' (column 5)`},
		{"app=web)", `selector "app=web)": expected "," or end after "app=web", found ")" at column 8`},
	} {
		_, err := Parse(tc.in)
		if got := errText(err); got != tc.want {
			t.Errorf("Parse(%q):\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestMatches(t *testing.T) {
	web := map[string]string{"app": "web", "tier": "front", "env": "prod", "gpu": ""}
	for _, tc := range []struct {
		sel    string
		labels map[string]string
		want   bool
	}{
		{"", nil, true},
		{"", web, true},
		{"app=web", web, true},
		{"app=db", web, false},
		{"app=web", nil, false},
		{"tier!=db", web, true},
		{"tier!=front", web, false},
		{"missing!=x", web, true}, // absent key satisfies !=
		{"env in (prod,staging)", web, true},
		{"env in (dev,staging)", web, false},
		{"missing in (a)", web, false},
		{"env notin (dev)", web, true},
		{"env notin (prod)", web, false},
		{"missing notin (a)", web, true},
		{"gpu", web, true},
		{"gpu", nil, false},
		{"!gpu", web, false},
		{"!legacy", web, true},
		{"gpu in ()", web, true}, // empty value
		{"app in ()", web, false},
		{"app=web,tier!=db,env in (prod, staging),env notin (dev),gpu,!legacy", web, true},
		{"app=web,tier!=db,env in (prod, staging),env notin (dev),gpu,legacy", web, false},
	} {
		sel, err := Parse(tc.sel)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.sel, err)
		}
		if got := sel.Matches(tc.labels); got != tc.want {
			t.Errorf("Parse(%q).Matches(%v) = %v, want %v", tc.sel, tc.labels, got, tc.want)
		}
	}
}

func TestZeroSelector(t *testing.T) {
	var s Selector
	if !s.Empty() || !s.Matches(nil) || s.String() != "" {
		t.Errorf("zero Selector: Empty=%v Matches(nil)=%v String=%q", s.Empty(), s.Matches(nil), s.String())
	}
}

func TestFromMap(t *testing.T) {
	for _, tc := range []struct {
		m    map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"tier": "db", "app": "web", "example.com/z": "1"}, "app=web,example.com/z=1,tier=db"},
		{map[string]string{"gpu": ""}, "gpu in ()"},
	} {
		sel := FromMap(tc.m)
		if got := sel.String(); got != tc.want {
			t.Errorf("FromMap(%v).String() = %q, want %q", tc.m, got, tc.want)
		}
		if !sel.Matches(tc.m) {
			t.Errorf("FromMap(%v) does not match its own map", tc.m)
		}
		again, err := Parse(sel.String())
		if err != nil || again.String() != tc.want {
			t.Errorf("Parse(%q) = %q, %v", tc.want, again.String(), err)
		}
		if sel.Empty() != (len(tc.m) == 0) {
			t.Errorf("FromMap(%v).Empty() = %v", tc.m, sel.Empty())
		}
	}
	sel := FromMap(map[string]string{"app": "web", "tier": "db"})
	if sel.Matches(map[string]string{"app": "web"}) {
		t.Error("FromMap selector matched a label set missing a key")
	}
	if !sel.Matches(map[string]string{"app": "web", "tier": "db", "extra": "x"}) {
		t.Error("FromMap selector rejected a superset")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "app=web,tier!=db,env in (prod, staging),env notin (dev),gpu,!legacy", "a in (,b)", "x==y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(sel.String())
		if err != nil || again.String() != sel.String() {
			t.Fatalf("Parse(%q).String() = %q, which parses to %q, %v", s, sel.String(), again.String(), err)
		}
	})
}
