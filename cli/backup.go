package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/skiff/api/backup"
	"skiff.dev/skiff/api/identity"
	"skiff.dev/skiff/server"
	"skiff.dev/skiff/store"
)

// keyPrefix is where the daemon keeps skiff's keys in etcd.
const keyPrefix = "/skiff"

func backupCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "save a backup of the cluster (an etcd snapshot and its manifest) to FILE",
		Long: `Save a backup of the cluster to FILE: a snapshot of etcd (every object and its
history, tokens, the CA, workflow run records) and a manifest saying what it
holds. Every write acknowledged before the backup began is in it. It needs an
admin token.

FILE is a tar of manifest.json and etcd.db. It is written to FILE.tmp and
renamed once the snapshot's SHA-256 matches the manifest's, so FILE is
always a whole backup; an older FILE is replaced. It holds the CA's private
key and the tokens' hashes: keep it as secret as an admin token.

skiff backup inspect FILE prints the manifest; skiff restore FILE --data DIR
makes a data directory of it.`,
		Example: `  skiff backup /backups/skiff-$(date +%F).tar`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			file := args[0]
			tmp := file + ".tmp"
			f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			m, err := c.Backup(cmd.Context(), f, Version)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, file)
			}
			if err != nil {
				os.Remove(tmp)
				return err
			}
			syncDir(filepath.Dir(file))
			fmt.Fprintf(e.stdout, "backup of the cluster saved to %s\n", file)
			printManifest(e.stdout, m)
			return nil
		},
	}
	var output string
	inspect := &cobra.Command{
		Use:   "inspect FILE",
		Short: "print a backup's manifest, after checking its snapshot against it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("-o %q: use json, or nothing for text", output)
			}
			return inspectBackup(e.stdout, args[0], output == "json")
		},
	}
	inspect.Flags().StringVarP(&output, "output", "o", "", "json for the manifest as JSON")
	cmd.AddCommand(inspect)
	return cmd
}

// inspectBackup checks a backup file's snapshot against its manifest and
// prints the manifest, as text or JSON.
func inspectBackup(w io.Writer, file string, asJSON bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	m, db, err := backup.Read(f)
	if err == nil {
		_, err = io.Copy(io.Discard, db)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if asJSON {
		return writeJSONOut(w, m)
	}
	printManifest(w, m)
	fmt.Fprintln(w, "checksum    ok")
	return nil
}

// printManifest prints what a backup holds, one fact a line.
func printManifest(w io.Writer, m backup.Manifest) {
	by := ""
	if m.SkiffVersion != "" {
		by = ", written by skiff " + m.SkiffVersion
	}
	fmt.Fprintf(w, "format      %s%s\n", m.Format, by)
	fmt.Fprintf(w, "taken       %s\n", m.Created.Local().Format(time.RFC3339))
	if m.CAHash != "" {
		fmt.Fprintf(w, "cluster CA  %s\n", m.CAHash)
	}
	fmt.Fprintf(w, "etcd        revision %d, snapshot %s, sha256 %s\n", m.EtcdRevision, byteSize(m.SnapshotSize), m.SnapshotSHA256)
	fmt.Fprintf(w, "objects     %s\n", census(store.Census{Objects: m.Objects}))
	fmt.Fprintf(w, "revisions   %d\n", m.Revisions)
}

// byteSize says "5.1 MiB".
func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// census says "12 (Node 2, Pod 10)".
func census(c store.Census) string {
	kinds := make([]string, 0, len(c.Objects))
	for k := range c.Objects {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for i, k := range kinds {
		kinds[i] = fmt.Sprintf("%s %d", k, c.Objects[k])
	}
	if len(kinds) == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", c.Total(), strings.Join(kinds, ", "))
}

func restoreCmd(e *env) *cobra.Command {
	var dir string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "restore FILE --data DIR",
		Short: "make a fresh data directory from a backup, for skiff server or skiff up",
		Long: `Make a data directory from a backup, for skiff server --data DIR (or skiff up
--data DIR) to start on: every object and its history, tokens, the CA,
workflow run records, as they were when the backup was taken. DIR must not
exist, or be empty: restore never writes over a cluster.

The snapshot is checked against the manifest first; a damaged backup is
refused. The restored etcd is a lone member of a new etcd cluster, with its
revisions moved on by a billion, so that clients watching from revisions
they saw before the restore list again.

Token secrets are not in a backup (only their hashes), so restore also
creates a new admin token, operator:admin, in DIR/admin.token: the server
writes DIR/config with it when it starts. Tokens from before the backup
keep working; revoke those you no longer trust with skiff token revoke.

--dry-run checks the backup and prints its manifest, and writes nothing.`,
		Example: `  skiff restore /backups/skiff-2025-06-01.tar --data /var/lib/skiff
  skiff server --data /var/lib/skiff`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dryRun {
				return inspectBackup(e.stdout, args[0], false)
			}
			return restore(cmd.Context(), e.stdout, args[0], dir)
		},
	}
	cmd.Flags().StringVar(&dir, "data", defaultDataDir(), "data directory to make (absent or empty)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the backup and print its manifest; write nothing")
	return cmd
}

// restore makes the data directory dir from the backup file; on failure
// it leaves dir as it found it (absent, or empty).
func restore(ctx context.Context, out io.Writer, file, dir string) (err error) {
	ents, err := os.ReadDir(dir)
	created := errors.Is(err, os.ErrNotExist)
	switch {
	case created:
	case err != nil:
		return fmt.Errorf("data directory %s: %w", dir, err)
	case len(ents) > 0:
		names := make([]string, 0, 3)
		for _, e := range ents[:min(3, len(ents))] {
			names = append(names, e.Name())
		}
		return fmt.Errorf("data directory %s is not empty (it holds %s): restore makes a fresh one only; pick a new directory, or move this one aside", dir, strings.Join(names, ", "))
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	m, db, err := backup.Read(f)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	defer func() {
		if err != nil && created {
			os.RemoveAll(dir)
		} else if err != nil {
			emptyDir(dir)
		}
	}()

	snap := filepath.Join(dir, "restore-etcd.db")
	if err := copyFile(snap, db); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := store.RestoreSnapshot(store.RestoreOptions{Snapshot: snap, Dir: filepath.Join(dir, "etcd")}); err != nil {
		return err
	}
	os.Remove(snap)

	// Start the restored member to check it and to add an admin token.
	etcd, err := store.StartEmbedded(ctx, store.EmbeddedOptions{Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		return err
	}
	defer etcd.Close()
	got, err := store.New(etcd.Client, store.Options{Prefix: keyPrefix}).Count(ctx, 0)
	if err != nil {
		return fmt.Errorf("count the restored objects: %w", err)
	}
	if want := (store.Census{Objects: m.Objects, Revisions: m.Revisions}); !maps.Equal(got.Objects, want.Objects) || got.Revisions != want.Revisions {
		return fmt.Errorf("the restored store holds %s objects and %d revisions, the manifest says %s and %d", census(got), got.Revisions, census(want), want.Revisions)
	}
	secret, _, err := server.NewTokens(etcd.Client, keyPrefix).Create(ctx,
		identity.Identity{Kind: identity.Operator, Name: "admin"}, server.RoleAdmin, "skiff restore")
	if err != nil {
		return fmt.Errorf("create an admin token: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}

	fmt.Fprintf(out, "restored %s into %s\n", file, dir)
	printManifest(out, m)
	fmt.Fprintf(out, "admin token %s (new; tokens from before the backup still work)\n", filepath.Join(dir, "admin.token"))
	fmt.Fprintf(out, "next        skiff server --data %s (or skiff up --data %s); it writes %s\n", dir, dir, filepath.Join(dir, "config"))
	return nil
}

// copyFile writes what r reads to a new file at path, and syncs it.
func copyFile(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// emptyDir removes what is in dir, which restore found absent or empty.
func emptyDir(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
