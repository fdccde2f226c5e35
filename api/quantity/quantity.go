// Package quantity parses and formats resource quantities as written in
// manifests: CPU as cores or millicores ("0.5", "250m") and memory or
// storage as bytes with an optional unit ("64Mi", "1G").
//
// It converts between that text and plain int64 values (millicores, bytes)
// so the rest of skiff can compare and add them without rounding. It is not
// an arbitrary-precision number type like Kubernetes' resource.Quantity, and
// it knows nothing about resource names, defaults or limits.
package quantity

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every parse error; test with errors.Is.
var ErrInvalid = errors.New("invalid quantity")

// parseError reads `"64MB" is not a quantity (use 64Mi)` or
// `"-1" is not a quantity: must not be negative`. It carries no field path;
// callers prefix their own.
type parseError struct{ input, reason, hint string }

func (e *parseError) Error() string {
	if e.hint != "" {
		return fmt.Sprintf("%q is not a quantity (use %s)", e.input, e.hint)
	}
	return fmt.Sprintf("%q is not a quantity: %s", e.input, e.reason)
}

func (e *parseError) Unwrap() error { return ErrInvalid }

// ParseCPU parses a CPU quantity into millicores: "250m" is 250, "1" is
// 1000, "0.5" is 500, "2.25" is 2250. Values finer than 1m ("0.0001"),
// negative values, suffixes other than m, and values beyond int64 are
// rejected.
func ParseCPU(s string) (int64, error) {
	return kind{
		unit:    cpuUnit,
		fixUnit: cpuFix,
		syntax:  `want cores like "0.5" or millicores like "500m"`,
		frac:    "finer than 1m (use at most 3 decimal places)",
	}.parse(s)
}

// ParseBytes parses a memory or storage quantity into bytes. It accepts a
// plain byte count, binary units Ki Mi Gi Ti Pi Ei (powers of 1024) and
// decimal units k M G T P E (powers of 1000). Decimals are allowed when the
// result is a whole number of bytes: "1.5Gi" is fine, "0.5" is not.
func ParseBytes(s string) (int64, error) {
	return kind{
		unit:    byteUnit,
		fixUnit: byteFix,
		syntax:  `want a byte count with an optional unit, like "512Mi", "1Gi" or "1G"`,
		frac:    "not a whole number of bytes",
	}.parse(s)
}

// FormatCPU formats millicores the way ParseCPU reads them: whole cores as a
// plain number (1000 is "1"), anything else in millicores (1500 is "1500m").
func FormatCPU(milli int64) string {
	if milli%1000 == 0 {
		return strconv.FormatInt(milli/1000, 10)
	}
	return strconv.FormatInt(milli, 10) + "m"
}

// FormatBytes formats bytes with the largest binary unit that divides them
// exactly, so ParseBytes reads it back unchanged: 67108864 is "64Mi",
// 1536 is "1536", 1000 is "1000".
func FormatBytes(b int64) string {
	for i := 6; i >= 1 && b != 0; i-- {
		if unit := int64(1) << (10 * i); b%unit == 0 {
			return strconv.FormatInt(b/unit, 10) + "KMGTPE"[i-1:i] + "i"
		}
	}
	return strconv.FormatInt(b, 10)
}

// kind describes one family of quantities.
type kind struct {
	unit    func(suffix string) (int64, bool) // multiplier for a unit suffix
	fixUnit func(num, suffix string) string   // likely intended spelling, or ""
	syntax  string                            // reason for malformed input
	frac    string                            // reason for a non-whole result
}

func cpuUnit(suffix string) (int64, bool) {
	switch suffix {
	case "":
		return 1000, true
	case "m":
		return 1, true
	}
	return 0, false
}

func cpuFix(num, suffix string) string {
	if strings.EqualFold(suffix, "mi") { // "250mi"
		return num + "m"
	}
	return ""
}

// byteUnit reads the decimal units k M G T P E and the binary units
// Ki Mi Gi Ti Pi Ei. It is on every pod's path (admission, placement), so
// it compares bytes rather than building the unit names.
func byteUnit(suffix string) (int64, bool) {
	switch {
	case suffix == "":
		return 1, true
	case len(suffix) == 1:
		if i := strings.IndexByte("kMGTPE", suffix[0]); i >= 0 {
			dec := int64(1)
			for ; i >= 0; i-- {
				dec *= 1000
			}
			return dec, true
		}
	case len(suffix) == 2 && suffix[1] == 'i':
		if i := strings.IndexByte("KMGTPE", suffix[0]); i >= 0 {
			return 1 << (10 * (i + 1)), true
		}
	}
	return 0, false
}

func byteFix(num, suffix string) string {
	l := strings.TrimSuffix(strings.ToLower(suffix), "b") // "MB", "KiB", "gb"
	if l == "" {
		return num // "64B"
	}
	if l = strings.TrimSuffix(l, "i"); len(l) == 1 && strings.Contains("kmgtpe", l) {
		return num + strings.ToUpper(l) + "i"
	}
	return ""
}

func (k kind) parse(s string) (int64, error) {
	v, reason := k.value(s)
	if reason == "" {
		return v, nil
	}
	e := &parseError{input: s, reason: reason}
	if reason == k.syntax {
		e.hint = k.hint(s)
	}
	return 0, e
}

// hint returns a valid spelling of a common mistake in s, or "".
func (k kind) hint(s string) string {
	t := strings.Join(strings.Fields(s), "") // "250 m"
	num, suffix := split(t)
	for _, c := range []string{t, k.fixUnit(num, suffix)} {
		if _, reason := k.value(c); c != "" && c != s && reason == "" {
			return c
		}
	}
	return ""
}

// value returns the quantity in base units, or a reason it is not one.
func (k kind) value(s string) (int64, string) {
	switch {
	case s == "":
		return 0, "must not be empty"
	case s[0] == '-':
		return 0, "must not be negative"
	}
	num, suffix := split(s)
	mul, ok := k.unit(suffix)
	whole, frac, dot := strings.Cut(num, ".")
	if !ok || !digits(whole) || !digits(frac) || len(whole)+len(frac) == 0 || dot && frac == "" {
		return 0, k.syntax
	}
	if q, reason, ok := k.small(whole, frac, mul); ok {
		return q, reason
	}
	return k.large(whole, frac, mul)
}

// large is value's arithmetic for any number of digits.
func (k kind) large(whole, frac string, mul int64) (int64, string) {
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Mul(n, big.NewInt(mul))
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := n.QuoRem(n, scale, new(big.Int))
	switch {
	case r.Sign() != 0:
		return 0, k.frac
	case !q.IsInt64():
		return 0, "too large"
	}
	return q.Int64(), ""
}

// small is value's arithmetic without big.Int, for numbers whose digits
// and product with the unit fit in 64 bits (every quantity anyone writes);
// ok is false for the others, which value works out with big.Int.
func (k kind) small(whole, frac string, mul int64) (v int64, reason string, ok bool) {
	if len(whole)+len(frac) > 19 { // 19 digits fit in a uint64, 20 may not
		return 0, "", false
	}
	var n uint64
	for _, s := range [2]string{whole, frac} {
		for i := 0; i < len(s); i++ {
			n = n*10 + uint64(s[i]-'0')
		}
	}
	hi, lo := bits.Mul64(n, uint64(mul))
	if hi != 0 {
		return 0, "", false
	}
	scale := uint64(1)
	for range len(frac) {
		scale *= 10
	}
	switch q := lo / scale; {
	case lo%scale != 0:
		return 0, k.frac, true
	case q > math.MaxInt64:
		return 0, "too large", true
	default:
		return int64(q), "", true
	}
}

// split separates the leading number from the unit suffix.
func split(s string) (num, suffix string) {
	i := strings.IndexFunc(s, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

func digits(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) < 0
}
