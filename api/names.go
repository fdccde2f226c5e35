package api

import (
	"errors"
	"fmt"
	"sort"

	"skiff.dev/skiff/api/labels"
)

// ValidateName checks a DNS label: 1 to 63 characters of a-z, 0-9 and '-',
// starting and ending with a letter or digit. Object names, namespaces and
// container names all follow it, so they can be host names and path parts.
func ValidateName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 63:
		return fmt.Errorf("%q is %d characters, at most 63 are allowed", s, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("%q has upper-case letters; names are lower-case (a-z, 0-9, '-')", s)
		default:
			return fmt.Errorf("%q is not a DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit)", s)
		}
	}
	return nil
}

// ValidateLabels checks label keys and values.
func ValidateLabels(l map[string]string) error {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := labels.ValidateKey(k); err != nil {
			return &FieldError{Path: joinKey("labels", k), Reason: err.Error()}
		}
		if err := labels.ValidateValue(l[k]); err != nil {
			return &FieldError{Path: joinKey("labels", k), Reason: err.Error()}
		}
	}
	return nil
}

// Name is a string field holding a DNS label.
type Name string

func (n Name) Check() error { return ValidateName(string(n)) }
