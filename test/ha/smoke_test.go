package ha

import (
	"context"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	l, _ := startHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctl, etcd, err := l.Leaders(ctx)
	t.Logf("leaders: %s %s %v", ctl, etcd, err)
	st, err := l.ServersStatus(ctx)
	t.Logf("%+v %v", st, err)
}
