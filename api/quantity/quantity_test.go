package quantity

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseCPU(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"250m", 250},
		{"1", 1000},
		{"0.5", 500},
		{".5", 500},
		{"2.25", 2250},
		{"1500m", 1500},
		{"0", 0},
		{"0m", 0},
		{"0.001", 1},
		{"0.5000", 500}, // trailing zeros are exact
		{"9223372036854775807m", math.MaxInt64},
		{"9223372036854775.807", math.MaxInt64},
	} {
		got, err := ParseCPU(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1000", 1000},
		{"64Mi", 64 << 20},
		{"1.5Gi", 3 << 29},
		{"0.5Ki", 512},
		{"1Ki", 1 << 10},
		{"1Ti", 1 << 40},
		{"1Pi", 1 << 50},
		{"7Ei", 7 << 60},
		{"1k", 1000},
		{"1M", 1e6},
		{"1.5G", 1.5e9},
		{"2T", 2e12},
		{"1P", 1e15},
		{"9E", 9e18},
		{"1.000", 1},
		{"9223372036854775807", math.MaxInt64},
	} {
		got, err := ParseBytes(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		parse func(string) (int64, error)
		in    string
		want  string
	}{
		{ParseCPU, "", `"" is not a quantity: must not be empty`},
		{ParseCPU, "-1", `"-1" is not a quantity: must not be negative`},
		{ParseCPU, "-250m", `"-250m" is not a quantity: must not be negative`},
		{ParseCPU, "0.0001", `"0.0001" is not a quantity: finer than 1m (use at most 3 decimal places)`},
		{ParseCPU, "1.5m", `"1.5m" is not a quantity: finer than 1m (use at most 3 decimal places)`},
		{ParseCPU, "250mi", `"250mi" is not a quantity (use 250m)`},
		{ParseCPU, "250Mi", `"250Mi" is not a quantity (use 250m)`},
		{ParseCPU, "250 m", `"250 m" is not a quantity (use 250m)`},
		{ParseCPU, " 1 ", `" 1 " is not a quantity (use 1)`},
		{ParseCPU, "2k", `"2k" is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, "1e3", `"1e3" is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, "+1", `"+1" is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, "1.", `"1." is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, ".", `"." is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, "m", `"m" is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, "1.2.3", `"1.2.3" is not a quantity: want cores like "0.5" or millicores like "500m"`},
		{ParseCPU, "9223372036854776", `"9223372036854776" is not a quantity: too large`},
		{ParseCPU, "99999999999999999999999m", `"99999999999999999999999m" is not a quantity: too large`},
		{ParseBytes, "64MB", `"64MB" is not a quantity (use 64Mi)`},
		{ParseBytes, "1GB", `"1GB" is not a quantity (use 1Gi)`},
		{ParseBytes, "512KB", `"512KB" is not a quantity (use 512Ki)`},
		{ParseBytes, "64mb", `"64mb" is not a quantity (use 64Mi)`},
		{ParseBytes, "1gi", `"1gi" is not a quantity (use 1Gi)`},
		{ParseBytes, "1GiB", `"1GiB" is not a quantity (use 1Gi)`},
		{ParseBytes, "64m", `"64m" is not a quantity (use 64Mi)`},
		{ParseBytes, "1K", `"1K" is not a quantity (use 1Ki)`},
		{ParseBytes, "100B", `"100B" is not a quantity (use 100)`},
		{ParseBytes, "64 Mi", `"64 Mi" is not a quantity (use 64Mi)`},
		{ParseBytes, "1 k", `"1 k" is not a quantity (use 1k)`},
		{ParseBytes, "64 MB", `"64 MB" is not a quantity (use 64Mi)`},
		{ParseBytes, "0.5", `"0.5" is not a quantity: not a whole number of bytes`},
		{ParseBytes, "0.1Ki", `"0.1Ki" is not a quantity: not a whole number of bytes`},
		{ParseBytes, "0.1KB", `"0.1KB" is not a quantity: want a byte count with an optional unit, like "512Mi", "1Gi" or "1G"`},
		{ParseBytes, "-1Gi", `"-1Gi" is not a quantity: must not be negative`},
		{ParseBytes, "", `"" is not a quantity: must not be empty`},
		{ParseBytes, "lots", `"lots" is not a quantity: want a byte count with an optional unit, like "512Mi", "1Gi" or "1G"`},
		{ParseBytes, "1X", `"1X" is not a quantity: want a byte count with an optional unit, like "512Mi", "1Gi" or "1G"`},
		{ParseBytes, "8Ei", `"8Ei" is not a quantity: too large`},
		{ParseBytes, "10E", `"10E" is not a quantity: too large`},
		{ParseBytes, "8EB", `"8EB" is not a quantity: want a byte count with an optional unit, like "512Mi", "1Gi" or "1G"`},
	} {
		_, err := tc.parse(tc.in)
		if err == nil {
			t.Errorf("parsing %q: no error, want %s", tc.in, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("parsing %q:\n got %s\nwant %s", tc.in, err, tc.want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("parsing %q: error %v does not wrap ErrInvalid", tc.in, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("parsing %q: error spans lines: %q", tc.in, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{FormatCPU(250), "250m"},
		{FormatCPU(1000), "1"},
		{FormatCPU(1500), "1500m"},
		{FormatCPU(0), "0"},
		{FormatCPU(2000), "2"},
		{FormatCPU(1), "1m"},
		{FormatBytes(67108864), "64Mi"},
		{FormatBytes(1000), "1000"},
		{FormatBytes(1536), "1536"},
		{FormatBytes(0), "0"},
		{FormatBytes(1024), "1Ki"},
		{FormatBytes(3 << 29), "1536Mi"},
		{FormatBytes(1 << 30), "1Gi"},
		{FormatBytes(7 << 60), "7Ei"},
		{FormatBytes(1 << 62), "4Ei"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 250, 999, 1000, 1001, 1024, 1536, 4096, 1e6, 64 << 20, 3 << 29, 1 << 40, 5 << 50, 7 << 60, math.MaxInt64} {
		if got, err := ParseCPU(FormatCPU(n)); err != nil || got != n {
			t.Errorf("ParseCPU(FormatCPU(%d)) = %d, %v", n, got, err)
		}
		if got, err := ParseBytes(FormatBytes(n)); err != nil || got != n {
			t.Errorf("ParseBytes(FormatBytes(%d)) = %d, %v", n, got, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"250m", "1.5Gi", "64MB", "0.0001", "9E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseCPU(s); err == nil {
			if m, err := ParseCPU(FormatCPU(n)); err != nil || m != n {
				t.Fatalf("ParseCPU(%q) = %d, but FormatCPU gives %q -> %d, %v", s, n, FormatCPU(n), m, err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseCPU(%q): %v does not wrap ErrInvalid", s, err)
		}
		if n, err := ParseBytes(s); err == nil {
			if m, err := ParseBytes(FormatBytes(n)); err != nil || m != n {
				t.Fatalf("ParseBytes(%q) = %d, but FormatBytes gives %q -> %d, %v", s, n, FormatBytes(n), m, err)
			}
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseBytes(%q): %v does not wrap ErrInvalid", s, err)
		}
	})
}

// TestByteUnits holds byteUnit to the loop it replaced, which built each
// unit's name, over every suffix of up to two ASCII characters.
func TestByteUnits(t *testing.T) {
	old := func(suffix string) (int64, bool) {
		if suffix == "" {
			return 1, true
		}
		dec := int64(1)
		for i, u := range "kMGTPE" {
			dec *= 1000
			switch suffix {
			case string(u):
				return dec, true
			case strings.ToUpper(string(u)) + "i":
				return 1 << (10 * (i + 1)), true
			}
		}
		return 0, false
	}
	suffixes := []string{""}
	for a := 0; a < 128; a++ {
		suffixes = append(suffixes, string(rune(a)))
		for b := 0; b < 128; b++ {
			suffixes = append(suffixes, string(rune(a))+string(rune(b)))
		}
	}
	for _, s := range suffixes {
		gm, gok := byteUnit(s)
		wm, wok := old(s)
		if gm != wm || gok != wok {
			t.Fatalf("byteUnit(%q) = %d, %v; want %d, %v", s, gm, gok, wm, wok)
		}
	}
}

// FuzzSmallMatchesLarge holds the 64-bit arithmetic to big.Int's wherever
// it answers: same value, same reason.
func FuzzSmallMatchesLarge(f *testing.F) {
	for _, s := range [][2]string{{"250", ""}, {"0", "5"}, {"9223372036854775", "807"}, {"9223372036854775", "808"},
		{"18446744073709551615", ""}, {"9999999999999999999", ""}, {"1", "0000000000000000001"}, {"7", ""}, {"8", ""}, {"", "5"}} {
		for _, mul := range []int64{1, 1000, 1 << 10, 1e6, 1 << 60, 1e18} {
			f.Add(s[0], s[1], mul)
		}
	}
	cpu := kind{unit: cpuUnit, frac: "frac"}
	f.Fuzz(func(t *testing.T, whole, frac string, mul int64) {
		if !digits(whole) || !digits(frac) || whole+frac == "" || mul < 1 {
			return
		}
		v, reason, ok := cpu.small(whole, frac, mul)
		if !ok {
			return
		}
		if wv, wr := cpu.large(whole, frac, mul); v != wv || reason != wr {
			t.Fatalf("small(%q, %q, %d) = %d, %q; big.Int gives %d, %q", whole, frac, mul, v, reason, wv, wr)
		}
	})
}

// TestParseAllocates: quantities as manifests write them parse without
// allocating (every pod's are parsed at admission and placement).
func TestParseAllocates(t *testing.T) {
	for _, s := range []string{"100m", "2", "0.5", "128Mi", "1.5Gi", "1G"} {
		parse := ParseCPU
		if strings.ContainsAny(s, "GMi") {
			parse = ParseBytes
		}
		if n := testing.AllocsPerRun(100, func() { parse(s) }); n != 0 {
			t.Errorf("parsing %q allocates %v times", s, n)
		}
	}
}
