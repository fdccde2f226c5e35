//go:build linux

package runtime

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// maxRecord is the longest line written as one record; longer lines are
// split into several records.
const maxRecord = 16 << 10

// logWriter appends records to dir/container.log, rotating it to
// container.log.1, .2 ... when it would exceed max bytes; keep files are
// kept in all. Every record is written straight to the file (no buffering),
// so nothing is lost when the shim dies.
type logWriter struct {
	mu   sync.Mutex
	dir  string
	max  int64
	keep int
	f    *os.File
	size int64
	now  func() time.Time
}

func openLogWriter(dir string, max int64, keep int) (*logWriter, error) {
	w := &logWriter{dir: dir, max: max, keep: keep, now: time.Now}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *logWriter) open() error {
	f, err := os.OpenFile(filepath.Join(w.dir, logFileName(0)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

func (w *logWriter) rotate() error {
	w.f.Close()
	w.f = nil
	os.Remove(filepath.Join(w.dir, logFileName(w.keep-1)))
	for i := w.keep - 2; i >= 0; i-- {
		err := os.Rename(filepath.Join(w.dir, logFileName(i)), filepath.Join(w.dir, logFileName(i+1)))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return w.open()
}

// write appends one record "RFC3339Nano STREAM LINE\n".
func (w *logWriter) write(stream string, line []byte) error {
	rec := make([]byte, 0, len(line)+64)
	rec = w.now().UTC().AppendFormat(rec, time.RFC3339Nano)
	rec = append(rec, ' ')
	rec = append(rec, stream...)
	rec = append(rec, ' ')
	rec = append(rec, line...)
	rec = append(rec, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		if err := w.open(); err != nil {
			return err
		}
	}
	if w.size > 0 && w.size+int64(len(rec)) > w.max {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(rec)
	w.size += int64(n)
	return err
}

func (w *logWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// copyLines copies r to w line by line, as records of stream, until EOF.
func copyLines(w *logWriter, stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, maxRecord)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			if werr := w.write(stream, line); werr != nil {
				// Keep draining: a full disk must not block the container.
				_ = werr
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}
