// Package bench holds skiff's benchmarks: commands that set up a real
// system, measure it and print a table with each figure beside its target.
// They are run by `skiff bench NAME`; targets are never asserted in tests.
package bench
