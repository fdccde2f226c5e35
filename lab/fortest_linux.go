package lab

import "context"

// TB is what StartTest needs of a *testing.T. (Package lab does not
// import testing: it is part of the skiff binary, `skiff dev cluster`.)
type TB interface {
	Helper()
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
}

// StartTest starts a lab for a test: it is closed when the test ends,
// with its logs shown first if the test failed.
func StartTest(ctx context.Context, t TB, cfg Config) *Lab {
	t.Helper()
	l, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab logs:\n%s", l.Logs(40))
		}
		if err := l.Close(); err != nil {
			t.Errorf("close the lab: %v", err)
		}
	})
	return l
}
