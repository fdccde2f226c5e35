package store_test

import (
	"strings"
	"testing"

	"skiff.dev/skiff/store"
)

func TestParseInitialCluster(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // FormatInitialCluster of the result
		wantErr string // a part of the error
	}{
		{in: "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380",
			want: "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380"},
		{in: "a=https://[fd00::1]:2380/, b=https://db-2.lan:2380", want: "a=https://[fd00::1]:2380,b=https://db-2.lan:2380"},
		{in: "a=http://10.0.0.1:2380", wantErr: "use https://"},
		{in: "a=https://10.0.0.1", wantErr: "want https://HOST:PORT"},
		{in: "a=https://10.0.0.1:2380/x", wantErr: "want https://HOST:PORT"},
		{in: "https://10.0.0.1:2380", wantErr: "is not NAME=https://HOST:PORT"},
		{in: "A=https://10.0.0.1:2380", wantErr: `server name "A"`},
		{in: "a=https://10.0.0.1:2380,a=https://10.0.0.2:2380", wantErr: "a is listed twice"},
	} {
		peers, err := store.ParseInitialCluster(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case store.FormatInitialCluster(peers) != tc.want:
			t.Errorf("%q: parsed as %s, want %s", tc.in, store.FormatInitialCluster(peers), tc.want)
		}
	}
}
